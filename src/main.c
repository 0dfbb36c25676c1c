/* ingot: builds golden machine images and runs them the immutable way. */
#include "config.h"

#include "cli.h"

int main(int argc, char **argv)
{
        return cli_main(argc, argv);
}
