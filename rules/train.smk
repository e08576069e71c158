rule train_model:
    input:
        user_slices=user_slices_folder,
        init_model=init_model_file,
        code=code("train_model"),
    output:
        model="results/models/unet.pt",
    log:
        "logs/train_model.log",
    benchmark:
        "benchmarks/train_model.tsv"
    conda:
        "../envs/segment.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        settings={
            k: v
            for k, v in config["train"].items()
            if k not in ("user_slices", "init_model", "device")
        },
        preprocess=config["preprocess"],
        device=config["train"]["device"],
    script:
        "../scripts/train_model.py"
