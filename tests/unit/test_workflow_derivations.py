"""Rerun inputs and environments are derived from the package's import graph, and checked."""

import re

import pytest
import yaml

from fibrecon.workflow import code_inputs, fibrecon_modules, third_party_imports

#: import name -> conda-forge package name, where they differ
CONDA_NAMES = {"skimage": "scikit-image", "yaml": "pyyaml", "pywt": "pywavelets",
               "matplotlib": "matplotlib-base", "torch": "pytorch",
               "pytorch_lightning": "pytorch-lightning", "sklearn": "scikit-learn"}


def _rules(repo):
    """(rule file, script, conda env) of every rule with a script."""
    out = []
    for smk in sorted((repo / "rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.split(r"^rule ", text, flags=re.M)[1:]:
            script = re.search(r'script:\s*\n\s*"\.\./scripts/([\w.]+)"', block)
            env = re.search(r'conda:\s*\n\s*"\.\./envs/([\w.]+)"', block)
            if script:
                out.append((block.split(":")[0], script.group(1), env and env.group(1)))
    return out


def _env_packages(path) -> dict:
    """Package name -> its line (``tifffile=2026.3.3``) of a conda env file."""
    deps = yaml.safe_load(path.read_text())["dependencies"]
    return {re.split(r"[=<> ]", d)[0]: d for d in deps if isinstance(d, str)}


def test_every_scripted_rule_has_an_env(repo):
    rules = _rules(repo)
    assert len(rules) >= 9
    assert all(env for _, _, env in rules), rules


def test_each_rule_env_holds_every_package_its_script_imports(repo):
    """A script's transitive module-level imports (through fibrecon) against envs/<stage>.yaml."""
    missing = {}
    for rule, script, env in _rules(repo):
        names = set(_env_packages(repo / "envs" / env))
        need = {CONDA_NAMES.get(n, n) for n in third_party_imports(repo / "scripts" / script)}
        if need - names:
            missing[f"{rule} ({env})"] = sorted(need - names)
    assert not missing, missing


def test_metrics_rule_code_inputs_follow_the_import_graph(repo):
    """particles.py imports extrema.py: the metrics rule must rerun when either changes."""
    names = {p.rsplit("/", 1)[-1] for p in code_inputs(repo / "scripts" / "metrics.py")}
    assert {"metrics.py", "particles.py", "extrema.py", "tortuosity.py", "__init__.py"} <= names
    names = {p.name for p in fibrecon_modules(repo / "scripts" / "train_model.py")}
    assert {"training.py", "align.py", "infer.py", "unet.py"} <= names


def test_rules_declare_their_code_through_the_derived_inputs(repo):
    for smk in (repo / "rules").glob("*.smk"):
        assert 'code("' not in smk.read_text() or re.search(r'code=code\("\w+"\)', smk.read_text())
        assert "src/fibrecon/" not in smk.read_text(), smk  # no hand-listed module paths


def test_only_the_file_modules_open_files(repo):
    """File formats live in fibrecon.files (and the simulator's in fibrecon.simulated_files);
    the few other modules that open files are the ones the package docstring names."""
    opens = re.compile(r"\bopen\(|\.read_text\(|\.write_text\(|imread\(|imwrite\(|np\.save|"
                       r"np\.load\(|torch\.save|torch\.load|ZipFile\(|TiffFile\(")
    allowed = {"samples.py", "unet.py", "modelcard.py", "workflow.py", "runlog.py",
               "simulated_files.py"}
    package = repo / "src" / "fibrecon"
    offenders = [p.name for p in package.glob("*.py")
                 if p.name not in allowed and opens.search(p.read_text())]
    assert offenders == [], offenders
    assert not (package / "io.py").exists()  # no module shadows the standard library's io


def test_every_env_that_reads_tiffs_can_decode_compressed_ones(repo):
    """tifffile decodes LZW, JPEG and zstd only with imagecodecs: an env without it would stop
    on a compressed instrument export that the local venv reads."""
    pins = {}
    for env in sorted((repo / "envs").glob("*.yaml")):
        names = _env_packages(env)
        if "tifffile" in names:
            assert "imagecodecs" in names, env.name
            pins[env.name] = names["imagecodecs"]
    assert len(pins) >= 5
    required = re.search(r"^imagecodecs==([\w.]+)", (repo / "requirements.txt").read_text(), re.M)
    assert required and set(pins.values()) == {f"imagecodecs={required.group(1)}"}, pins
