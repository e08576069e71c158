rule import_labels:
    input:
        labels=raw_folder,
        code=code("import_labels"),
    output:
        labels="results/imported/{sample}.tif",
        info="results/imported/{sample}.json",
    log:
        "logs/import_labels/{sample}.log",
    conda:
        "../envs/volume.yaml"
    params:
        voxel=voxel_from_sheet,
        roi=sheet_value("roi"),
    script:
        "../scripts/import_labels.py"


rule volume:
    input:
        labels=segmented_labels,
        code=code("volume"),
    output:
        volume="results/volume/{sample}.tif",
        ome="results/volume/{sample}.ome.tif",
        figure=report(
            "results/volume/{sample}_orthoslices.png",
            caption="../report/orthoslices.rst",
            category="Volumes",
        ),
        view=report(
            "results/volume/{sample}_3d.png",
            caption="../report/view3d.rst",
            category="Volumes",
        ),
    log:
        "logs/volume/{sample}.log",
    benchmark:
        "benchmarks/volume/{sample}.tsv"
    conda:
        "../envs/volume.yaml"
    params:
        settings=config["volume"],
    script:
        "../scripts/volume.py"
