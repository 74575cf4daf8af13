"""The shipped configs: each validates, states the claims of its group of ../shared/reference.md, and
passes them, here at a reduced batch (the same override as ``actstats sweep FILE --set batch=200``).

The claims' tolerances come from the formulas and the finite width of one net (see each file's
comments); a smaller batch only adds the sampling noise of the inputs' norms, about
sqrt(2/width)/sqrt(batch) = 0.45% here. Runs that several files share (all-claims.yaml repeats the
groups) are computed once.
"""

import json
import re
from pathlib import Path

import pytest

from actstats.claims import evaluate
from actstats.sweep import LocalExecutor, SweepConfig, execute

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {p.stem: p for p in sorted((ROOT / "configs").glob("*.yaml"))}
GROUPS = {
    "tanh-scale": ["C3", "C4", "C5"],
    "relu-xavier-he": ["C6", "C7"],
    "symmetry": ["C1", "C2"],
    "kaiming-modes": ["C8"],
    "sigmoid-schemes": ["C9", "C10"],
    "sigmoid-neuron": ["C11"],
    "all-claims": [f"C{i}" for i in range(1, 13)],
}
REDUCED = {"batch": 200}


def test_one_config_per_claim_group():
    assert sorted(CONFIGS) == sorted(GROUPS)


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_config_validates_and_states_the_claims_of_its_group(name):
    sweep = SweepConfig.from_yaml(CONFIGS[name])
    assert sweep.name == name and sweep.description
    stated = {c for claim in sweep.claims for c in re.findall(r"\bC\d+\b", claim.text)}
    assert stated == set(GROUPS[name])
    # every claim is about at least one run, and names are unique folder names
    assert all(claim.runs for claim in sweep.claims)
    assert len({r.name for r in sweep.runs}) == len(sweep.runs)
    # the reduced variant is the same plan with a smaller batch
    small = SweepConfig.from_yaml(CONFIGS[name], REDUCED)
    assert [r.name for r in small.runs] == [r.name for r in sweep.runs]
    assert all(r.config.batch == 200 for r in small.runs)


def identity(config):
    return json.dumps(config.identity(), sort_keys=True)


@pytest.fixture(scope="module")
def computed():
    sweeps = {name: SweepConfig.from_yaml(path, REDUCED) for name, path in CONFIGS.items()}
    configs = {identity(r.config): r.config for s in sweeps.values() for r in s.runs}
    results = {}
    with LocalExecutor(2) as executor:
        futures = {executor.submit(execute, config, False): key for key, config in configs.items()}
        for future in executor.as_completed(list(futures)):
            outcome = future.result()
            assert outcome.ok, (configs[futures[future]], outcome.message)
            results[futures[future]] = outcome.result
    return sweeps, results


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_config_passes_its_claims_at_reduced_size(computed, name):
    sweeps, cache = computed
    sweep = sweeps[name]
    results = {r.name: cache[identity(r.config)] for r in sweep.runs}
    checked = evaluate(sweep.claims, sweep, results)
    failed = {c.claim.text: c.failures for c in checked if not c.passed}
    assert not failed
    assert len(checked) == len(sweep.claims) >= 5


def test_readme_documents_the_sweep_format_with_a_valid_example_and_real_figures():
    import yaml

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"### Sweep files.*?```yaml\n(.*?)```", readme, re.S).group(1)
    example = SweepConfig.from_dict(yaml.safe_load(block), where="README example")
    assert len(example.runs) == 2 * 2 * 3 and len(example.claims) == 2
    assert example.runs[0].name == "init=xavier_width=100_seed=0"
    for name in CONFIGS:
        assert f"configs/{name}.yaml" in readme
    images = re.findall(r"\]\((docs/examples/[^)]+\.png)\)", readme)
    assert len(images) >= 7
    for image in images:
        assert (ROOT / image).is_file(), image
