rule train_model:
    input:
        unpack(annotation_inputs),
        init_model=init_model_file,
        label_volumes=config["train"]["label_volumes"],
        code=code("train_model"),
    output:
        model="results/models/unet.pt",
    log:
        "logs/train_model.log",
    benchmark:
        "benchmarks/train_model.tsv"
    conda:
        "../envs/segment.yaml"
    threads: config["train"]["workers"]
    resources:
        gpu=1,
    params:
        # workers only sets the job's threads: changing it retrains nothing
        settings={k: v for k, v in config["train"].items() if k != "workers"},
        preprocess=TRAIN_PREPROCESS,
        samples=list(ANNOTATIONS),
        sample_kvs={s: SAMPLES.at[s, "kvs"] for s in ANNOTATIONS},
    script:
        "../scripts/train_model.py"
