/* cresnet: the command line. Parses the subcommand and hands over to the
 * modules; holds no logic of its own. */
#include "cresnet/error.h"
#include "cresnet/model.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out, "usage: cresnet summary -m small|medium|large\n"
                 "\n"
                 "  summary   print the model's layer table (torchsummary format)\n");
}

static int cmd_summary(int argc, char **argv) {
    const char *arch = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-m") == 0 && i + 1 < argc)
            arch = argv[++i];
        else
            cr_fatal(CR_EXIT_USAGE, "summary", "unexpected argument '%s'", argv[i]);
    }
    if (!arch) cr_fatal(CR_EXIT_USAGE, "summary", "missing -m small|medium|large");
    cr_model_desc desc;
    char err[256];
    if (cr_model_describe(arch, NULL, 0, NULL, 0, &desc, err, sizeof err) != 0)
        cr_fatal(CR_EXIT_USAGE, "model.arch", "%s", err);
    cr_model_print_summary(&desc, stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return CR_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "summary") == 0) return cmd_summary(argc - 2, argv + 2);
    cr_fatal(CR_EXIT_USAGE, "command line", "unknown subcommand '%s' (try cresnet --help)", cmd);
}
