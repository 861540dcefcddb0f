"""FormRouter: its features, the mis-scored-group rule, the file round trip and that it ranks what it should."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from test_routing_eval import MMLU, needs_mmlu
from tokenrace.routing.evaluate import evaluate, kfold_by_subject, split_by_subject
from tokenrace.routing.outcomes import OutcomeTable, load_routellm_mmlu
from tokenrace.routing.routers import (
    FORM_FEATURE_NAMES,
    FeatureRouter,
    FormRouter,
    LengthRouter,
    form_features,
    load_router,
)


def _table(n_subjects: int = 12, per_subject: int = 60, seed: int = 0, broken: str | None = None) -> OutcomeTable:
    """Questions whose gain comes from their form: a posed question ("...?") with sentence options gains
    from the strong model, a sentence to complete with one-word options does not. ``broken``: one more
    subject whose strong column is all wrong (a scoring failure), where the gain runs the other way."""
    rng = np.random.default_rng(seed)
    prompts, groups, rows = [], [], []
    names = [f"s{g}" for g in range(n_subjects)] + ([broken] if broken else [])
    for name in names:
        for i in range(per_subject):
            words = " ".join(f"w{rng.integers(0, 400)}" for _ in range(int(rng.integers(5, 40))))
            posed = rng.random() < 0.5
            if posed:
                stem = f"{name} item {i}: {words}. Which statement follows?"
                options = [f"The {k} claim holds because {words[:20]}." for k in ("first", "second", "third", "last")]
            else:
                stem = f"{name} item {i}: {words} is called"
                options = ["alpha", "beta", "gamma", "delta"]
            text = stem + "\n" + "\n".join(f"{chr(65 + j)}. {o}" for j, o in enumerate(options)) + "\nAnswer:"
            weak = float(rng.random() < 0.6)
            gain = 0.7 if posed else 0.05
            strong = 1.0 if weak == 0 and rng.random() < gain else weak
            if name == broken:
                strong = 0.0
                weak = float(rng.random() < (0.2 if posed else 0.9))
            prompts.append(text)
            groups.append(name)
            rows.append([weak, strong])
    return OutcomeTable(prompts=prompts, groups=np.array(groups), models=("weak", "strong"), scores=np.array(rows))


def _named(text: str) -> dict[str, float]:
    return dict(zip(FORM_FEATURE_NAMES, form_features(text), strict=True))


def test_form_features_read_the_form() -> None:
    completion = _named("The bone of the thigh is the\nA. femur\nB. ulna\nC. tibia\nD. radius\nAnswer:")
    assert completion["short_options"] == 1.0
    assert completion["completion_stem"] == 1.0
    posed = _named("Which of the following is true?\nA. It rains in the desert often\nB. Two\nAnswer:")
    assert posed["short_options"] == 0.0
    assert posed["completion_stem"] == 0.0
    assert posed["which_of_following"] == 1.0
    plain = form_features("Tell me about cats")  # no options: not "short options", whatever the stem
    assert len(plain) == len(FORM_FEATURE_NAMES)
    assert _named("Tell me about cats")["short_options"] == 0.0
    assert len(form_features("")) == len(FORM_FEATURE_NAMES)


def test_form_router_ranks_by_form_on_unseen_subjects() -> None:
    train, test = split_by_subject(_table(), 0.25, 0)
    router = FormRouter(members=2, epochs=30).fit(train)
    scores = router.score(test.prompts)
    assert evaluate(test, scores).apgr > 0.65  # random is 0.5; the form explains most of the gain here
    posed = np.array(["Which statement follows?" in p for p in test.prompts])
    assert scores[posed].mean() > scores[~posed].mean()


def test_form_router_leaves_out_a_mis_scored_subject() -> None:
    table = _table(broken="broken")
    router = FormRouter(members=2, epochs=30).fit(table)
    assert router.dropped_groups == ["broken"]
    clean = table.in_groups([g for g in table.subjects if g != "broken"])
    same = FormRouter(members=2, epochs=30).fit(clean)
    probe = table.prompts[:50]
    assert np.allclose(router.score(probe), same.score(probe))
    # The rule can be switched off, and then the broken subject does change what is learned.
    kept = FormRouter(members=2, epochs=30, min_strong_ratio=0.0).fit(table)
    assert kept.dropped_groups == []
    assert not np.allclose(kept.score(probe), same.score(probe))


@pytest.mark.parametrize("hidden", [0, 8])
def test_form_router_round_trip(tmp_path: Path, hidden: int) -> None:
    train, test = split_by_subject(_table(), 0.25, 0)
    router = FormRouter(hidden=hidden, members=2, epochs=20, min_strong_ratio=0.4, min_group=10).fit(train)
    path = tmp_path / "form.npz"
    router.save(path)
    loaded = load_router(path)
    assert type(loaded) is FormRouter
    assert (loaded.hidden, loaded.members, loaded.min_strong_ratio, loaded.min_group) == (hidden, 2, 0.4, 10)
    assert np.allclose(loaded.score(test.prompts), router.score(test.prompts))
    assert np.allclose(loaded.difficulty(test.prompts), router.difficulty(test.prompts))
    assert loaded.score(test.prompts[:1]).shape == (1,)
    # A form file is not a features file: the feature sets differ, so each loader refuses the other kind.
    with pytest.raises(ValueError):
        FeatureRouter.load(path)
    features_path = tmp_path / "features.npz"
    FeatureRouter(hidden=0).fit(train).save(features_path)
    with pytest.raises(ValueError):
        FormRouter.load(features_path)
    assert type(load_router(features_path)) is FeatureRouter


@needs_mmlu
def test_form_router_beats_random_and_length_on_unseen_mmlu_subjects() -> None:
    """A fold of the TRAINING subjects of the held-out split (its test subjects stay untouched here): the
    first fold that learns from high_school_mathematics, so the mis-scored-subject rule is exercised too."""
    table = load_routellm_mmlu(MMLU)
    train, _ = split_by_subject(table, 0.2, 0)
    fold_train, fold_test = next(
        (a, b) for a, b in kfold_by_subject(train, 5, 0) if "high_school_mathematics" in a.subjects
    )
    router = FormRouter().fit(fold_train)
    assert router.dropped_groups == ["high_school_mathematics"]
    apgr = evaluate(fold_test, router.score(fold_test.prompts)).apgr
    length = evaluate(fold_test, LengthRouter().fit(fold_train).score(fold_test.prompts)).apgr
    assert apgr > 0.57  # random: 0.5; about 0.61 when written
    assert apgr > length
