# texad: diffusion-based texture anomaly detection, reproduced end to end.
#   snakemake --cores 8 --use-conda                          # the paper reproduction (config.yaml)
#   snakemake --cores 2 --configfile config/demo.yaml        # the embedded synthetic demo (make demo)
#   snakemake --profile profiles/slurm                       # the same workflow on a SLURM cluster
from snakemake.utils import min_version

min_version("9.0")


# config.yaml (beside this file) is the default; a --configfile replaces it instead of being merged into it.
if not workflow.config_settings.configfiles:

    configfile: f"{workflow.basedir}/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/methods.smk"
include: "workflow/rules/selection.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
