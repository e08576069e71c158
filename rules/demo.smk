rule demo_stack:
    input:
        code=code("demo_stack"),
    output:
        raw=directory("results/raw/{sample}"),
        truth=directory("results/truth/{sample}"),
    log:
        "logs/demo_stack/{sample}.log",
    benchmark:
        "benchmarks/demo_stack/{sample}.tsv"
    conda:
        "../envs/simulate.yaml"
    params:
        shape=config["demo"]["shape"],
        voxel_size=config["demo"]["voxel_size_um"],
        cbd_fraction=config["demo"]["cbd_fraction"],
        d50_um=config["demo"]["d50_um"],
        tilt_corrected=config["demo"]["tilt_corrected"],
        cap_px=config["demo"]["cap_px"],
        vendor=config["demo"]["vendor"],
        artifacts=config["demo"]["artifacts"],
        sample=lambda wc: config["demo"]["samples"][wc.sample],
        kvs=sheet_value("kvs"),
        pattern=sheet_value("pattern"),
    script:
        "../scripts/demo_stack.py"
