"""`tokenrace router train|eval` and a trained router as the gateway's cascade difficulty (`gateway.difficulty`).

The outcome data is a small synthetic JSONL file: long, option-heavy questions are those only the strong
model gets right, short ones both get right, so a feature router learns something the heuristic does not
score the same way.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from test_gateway import Gateway, _ep, gateway  # noqa: F401  (the fixture and harness)
from tokenrace.cli import app
from tokenrace.config import ConfigError, GatewayConfig, load_config
from tokenrace.gateway.app import GatewayApp
from tokenrace.gateway.difficulty import HeuristicDifficulty
from tokenrace.records import OK, RequestRecord, RunInfo
from tokenrace.routing.estimator import HeuristicRouter, TrainedDifficulty, load_estimator
from tokenrace.store import Store

runner = CliRunner()

WORDS = "river stone garden window paper market bridge lantern orchard violin harbor meadow".split()
# A question of the "hard" shape: long stem, quoted terms and four options (MMLU-like).
HARD_PROMPT = (
    'Consider the "river" and the "bridge" of the old market town, where the lantern maker and the violin '
    "maker argue about the orchard and the harbor through the meadow for many long seasons of the year. "
    "Which statement follows?\nA. river stone\nB. garden window\nC. paper market\nD. bridge lantern"
)


def _question(rng: random.Random, hard: bool) -> str:
    if not hard:
        return f"Name a {rng.choice(WORDS)}."
    stem = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 70)))
    options = "\n".join(f"{letter}. {rng.choice(WORDS)} {rng.choice(WORDS)}" for letter in "ABCD")
    return f'In "{rng.choice(WORDS)}" {stem}? Which holds?\n{options}'


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six subjects × 60 prompts: hard ones gain from the strong model, easy ones do not."""
    rng = random.Random(7)
    path = tmp_path_factory.mktemp("outcomes") / "outcomes.jsonl"
    lines = [json.dumps({"meta": {"weak": "small", "strong": "big"}})]
    for g in range(6):
        for i in range(60):
            hard = rng.random() < 0.4
            weak = 0 if hard and rng.random() < 0.9 else 1
            lines.append(
                json.dumps(
                    {
                        "id": f"s{g}/{i}",
                        "group": f"subject{g}",
                        "prompt": _question(rng, hard),
                        "scores": {"small": weak, "big": 1},
                    }
                )
            )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(outcomes: Path) -> Path:
    out = outcomes.parent / "router.npz"
    result = runner.invoke(app, ["router", "train", "--router", "features", "--data", str(outcomes), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "trained features on 360 prompts / 6 subjects" in result.output
    assert "held-out subjects" in result.output and "oracle" in result.output
    assert out.is_file()
    return out


def test_train_then_eval_the_saved_router(trained: Path, outcomes: Path, tmp_path: Path) -> None:
    args = ["router", "eval", "--data", str(outcomes), "--router", str(trained), "--router", "length"]
    result = runner.invoke(app, [*args, "--folds", "3", "--format", "json"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.output)
    rows = {row["router"]: row for row in report["held_out"]["rows"]}
    assert set(rows) == {"random", "subject-oracle", "oracle", "file:router.npz", "length"}
    assert rows["random"]["apgr"] == pytest.approx(0.5)
    assert rows["file:router.npz"]["apgr"] > 0.6  # it learned the hard shape (it also saw these subjects)
    assert rows["file:router.npz"]["p50_ms"] is not None
    assert {row["router"] for row in report["kfold"]} == set(rows)
    table = runner.invoke(app, [*args, "--test-fraction", "0.3"])
    assert table.exit_code == 0, table.output
    for text in ("APGR", "CPT(50%)", "CPT(80%)", "always-weak", "always-strong", "file:router.npz"):
        assert text in table.output


def test_eval_png_json_and_html(outcomes: Path, tmp_path: Path) -> None:
    saved, page = tmp_path / "out" / "eval.json", tmp_path / "out" / "eval.html"
    outputs = ["--png", str(tmp_path / "charts"), "--json", str(saved), "--html", str(page)]
    result = runner.invoke(app, ["router", "eval", "--data", str(outcomes), *outputs])
    assert result.exit_code == 0, result.output
    png = (tmp_path / "charts" / "routing-curve.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    doc = orjson.loads(saved.read_bytes())
    assert doc["kind"] == "tokenrace-router-eval" and (doc["weak"], doc["strong"]) == ("small", "big")
    curves = doc["held_out"]["curves"]
    assert set(curves) == {"length", "features", "form", "random", "oracle", "always-weak", "always-strong"}
    share, pgr = curves["oracle"]
    assert share[0] == 0 and share[-1] == 1 and pgr[-1] == pytest.approx(1.0)
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>") and 'id="chart-routing"' in html and "vegaEmbed" in html
    assert str(saved) in result.output.replace("\n", "") and str(page) in result.output.replace("\n", "")


def test_eval_over_repeated_splits(outcomes: Path, tmp_path: Path) -> None:
    """--splits N: every router fitted and judged on N distinct by-subject splits, figures summarised."""
    args = ["router", "eval", "--data", str(outcomes), "--router", "length", "--router", "features"]
    result = runner.invoke(app, [*args, "--splits", "4", "--seed", "2", "--format", "json"])
    assert result.exit_code == 0, result.output
    splits = orjson.loads(result.output)["splits"]
    assert splits["count"] == 4 and splits["seeds"][0] == 2 and splits["skipped_seeds"] == []
    rows = {row["router"]: row for row in splits["rows"]}
    assert list(rows) == ["random", "subject-oracle", "oracle", "length", "features"]
    assert rows["random"]["apgr"]["mean"] == pytest.approx(0.5) and rows["random"]["apgr"]["std"] == pytest.approx(0)
    for row in rows.values():
        apgr = row["apgr"]
        assert apgr["min"] <= apgr["median"] <= apgr["max"] and apgr["min"] <= apgr["mean"] <= apgr["max"]
        assert apgr["max"] <= rows["oracle"]["apgr"]["max"] + 1e-9
    # The synthetic hard questions have a shape the feature router learns on subjects it never saw.
    assert rows["features"]["apgr"]["min"] > 0.6 and rows["features"]["cpt50"]["mean"] < 0.4
    # The mean over splits is the mean of each split's own figure (split 2 alone, as the held-out view shows).
    first = runner.invoke(app, [*args, "--seed", "2", "--format", "json"])
    single = {row["router"]: row["apgr"] for row in orjson.loads(first.output)["held_out"]["rows"]}
    assert rows["features"]["apgr"]["min"] <= single["features"] <= rows["features"]["apgr"]["max"]
    table = runner.invoke(app, [*args, "--splits", "3"])
    assert table.exit_code == 0, table.output
    assert "3 held-out splits by subject" in table.output and "subject-oracle" in table.output
    refused = runner.invoke(app, [*args, "--splits", "1"])
    assert refused.exit_code == 2 and "--splits 1" in refused.output


def test_repeated_splits_skip_subjects_where_the_strong_model_is_not_ahead(tmp_path: Path) -> None:
    """A split whose held-out subject has the strong model behind has no gap to recover: left out and named."""
    rng = random.Random(1)
    lines = [json.dumps({"meta": {"weak": "small", "strong": "big"}})]
    for g in range(4):
        for i in range(30):
            hard = rng.random() < 0.5
            scores = {"small": 1, "big": 0} if g == 3 else {"small": 0 if hard else 1, "big": 1}
            row = {"id": f"{g}/{i}", "group": f"s{g}", "prompt": _question(rng, hard), "scores": scores}
            lines.append(json.dumps(row))
    data = tmp_path / "o.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["router", "eval", "--data", str(data), "--router", "length", "--test-fraction", "0.25"]
    # One subject per split (seed 0 holds out s2, so the single held-out view can be judged); four distinct
    # splits exist, and the one holding out s3 cannot be.
    result = runner.invoke(app, [*args, "--seed", "0", "--splits", "4", "--format", "json"])
    assert result.exit_code == 0, result.output
    splits = orjson.loads(result.output)["splits"]
    assert splits["count"] == 3 and len(splits["skipped_seeds"]) == 1 and splits["asked"] == 4


def test_eval_and_train_from_paired_benchmark_runs(store: Store, tmp_path: Path) -> None:
    """--runs: two runs of different endpoints on the same scored prompts (two suites = two groups)."""
    rng = random.Random(3)
    texts: dict[str, str] = {}
    for run_id, endpoint, strong in (("r-small", "small", False), ("r-big", "big", True)):
        store.create_run(
            RunInfo(run_id=run_id, started_at=time.time(), endpoint=endpoint, workload="suites:chat,math",
                    profile={}, config={}, versions={}, host={})
        )  # fmt: skip
        records = []
        for seq in range(60):
            suite, hard = ("chat", "math")[seq % 2], seq % 3 == 0
            texts[f"{suite}-{seq}"] = _question(rng, hard)
            quality = 1.0 if strong or not hard else 0.0
            records.append(
                RequestRecord(run_id=run_id, seq=seq, endpoint=endpoint, api="openai-chat", model=endpoint,
                              status=OK, suite=suite, quality=quality, extra={"prompt_id": f"{suite}-{seq}"})
            )  # fmt: skip
        store.add_records(records)
        store.finish_run(run_id, "complete", None, time.time())
    log = tmp_path / "prompts.jsonl"
    log.write_text("".join(json.dumps({"prompt_id": k, "prompt": v}) + "\n" for k, v in texts.items()))
    db = store.url.split("///", 1)[1]
    source = ["--runs", "r-small,r-big", "--store", db, "--prompts", str(log)]
    result = runner.invoke(app, ["router", "eval", *source, "--format", "json"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.output)
    assert "runs r-small, r-big: 60 prompts, 2 subjects" in report["data"]
    assert (report["weak"], report["strong"]) == ("small", "big")
    trained = runner.invoke(app, ["router", "train", *source, "-o", str(tmp_path / "r.npz")])
    assert trained.exit_code == 0, trained.output
    one = runner.invoke(app, ["router", "eval", "--runs", "r-small", "--store", db])
    assert one.exit_code == 2 and "two or more runs" in one.output


def test_train_calibrates_to_a_willingness_to_pay(outcomes: Path, tmp_path: Path) -> None:
    """--pay: the strong share worth its price, read off the held-out curve, printed as premium_share."""
    args = ["router", "train", "--router", "features", "--data", str(outcomes), "-o", str(tmp_path / "r.npz")]

    def share(pay: str, costs: str) -> float:
        result = runner.invoke(app, [*args, "--pay", pay, "--costs", costs])
        assert result.exit_code == 0, result.output
        assert "premium_share:" in result.output
        return float(result.output.split("premium_share:")[1].split()[0])

    # A correct answer worth 1 and a strong call 0.1 dearer: worth it for the hard ~40% (each gains ~0.9),
    # not for the easy ones (they gain nothing), so the share sits near the hard share, well inside (0, 1).
    fair = share("1", "0.001,0.1")
    assert 0.2 < fair < 0.6
    assert share("0.05", "0.001,0.1") == 0.0  # a strong call costs more than any answer is worth
    assert share("1000", "0.001,0.1") >= fair  # paying more never buys fewer strong calls
    # Over 4 splits' mean curve: still between the ends, and the table of what it was read from is said.
    over = runner.invoke(app, [*args, "--pay", "1", "--costs", "0.001,0.1", "--splits", "4"])
    assert over.exit_code == 0, over.output
    assert "mean curve over 4 held-out splits" in over.output.replace("\n", " ")
    assert 0.2 < float(over.output.split("premium_share:")[1].split()[0]) < 0.6
    alone = runner.invoke(app, [*args, "--splits", "4"])
    assert alone.exit_code == 2 and "with --pay" in alone.output
    missing = runner.invoke(app, [*args, "--pay", "1"])
    assert missing.exit_code == 2 and "--costs WEAK,STRONG" in missing.output
    free = runner.invoke(app, [*args[:-2], "-o", str(tmp_path / "never.npz"), "--pay", "0", "--costs", "0,1"])
    assert free.exit_code == 2 and "--pay 0: must be positive" in free.output
    assert not (tmp_path / "never.npz").exists()  # refused before any training
    bad = runner.invoke(app, [*args, "--pay", "1", "--costs", "cheap,dear"])
    assert bad.exit_code == 2 and "two numbers" in bad.output


def test_eval_and_train_refuse_bad_input(outcomes: Path, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["router", "eval", "--data", str(outcomes), "--router", str(tmp_path / "no.npz")])
    assert missing.exit_code == 2 and "router file not found" in missing.output
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    bad = runner.invoke(app, ["router", "eval", "--data", str(outcomes), "--router", str(junk)])
    assert bad.exit_code == 2 and "not a tokenrace router file" in bad.output
    kind = runner.invoke(app, ["router", "train", "--router", "magic", "--data", str(outcomes), "-o", str(junk)])
    assert kind.exit_code == 2 and "unknown router 'magic'" in kind.output
    fixed = runner.invoke(app, ["router", "train", "--router", "heuristic", "--data", str(outcomes), "-o", str(junk)])
    assert fixed.exit_code == 2 and "learns nothing" in fixed.output


def test_eval_judges_the_gateway_heuristic(outcomes: Path) -> None:
    """The gateway's default difficulty, judged like any router; it scores prompts as the gateway does."""
    result = runner.invoke(
        app, ["router", "eval", "--data", str(outcomes), "--router", "heuristic", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    rows = {row["router"]: row for row in orjson.loads(result.output)["held_out"]["rows"]}
    builtin = HeuristicDifficulty()
    assert HeuristicRouter().score([HARD_PROMPT]).tolist() == [
        builtin.score([{"role": "user", "content": HARD_PROMPT}])
    ]
    # The hard shape (long, quoted, four options) reads as harder to the heuristic too: better than random here.
    assert rows["heuristic"]["apgr"] > 0.55 and rows["heuristic"]["p99_ms"] is not None


def test_estimator_scores_the_last_user_message(trained: Path) -> None:
    estimator = load_estimator(trained)
    assert isinstance(estimator, TrainedDifficulty) and estimator.name == "trained:features"
    hard = estimator.score([{"role": "user", "content": HARD_PROMPT}])
    easy = estimator.score([{"role": "user", "content": HARD_PROMPT}, {"role": "user", "content": "Name a river."}])
    assert 0.0 <= easy < hard <= 1.0
    with_reply = [{"role": "user", "content": HARD_PROMPT}, {"role": "assistant", "content": "Name a river."}]
    assert estimator.score(with_reply) == hard  # the assistant's turn is not what is scored


def test_estimator_loads_an_embedding_router(outcomes: Path, tmp_path: Path) -> None:
    from tokenrace.routing.outcomes import from_jsonl
    from tokenrace.routing.routers import EmbeddingRouter, HashingEmbedder

    path = tmp_path / "embed.npz"
    EmbeddingRouter(HashingEmbedder(dim=64), lam=10.0).fit(from_jsonl(outcomes)).save(path)
    estimator = load_estimator(path)
    assert estimator.name == "trained:embed" and TrainedDifficulty(estimator.router).kind == "embed"
    hard = estimator.score([{"role": "user", "content": HARD_PROMPT}])
    easy = estimator.score([{"role": "user", "content": "Name a river."}])
    assert 0.0 <= easy < hard <= 1.0  # the hashed words of the hard shape carry its gain


def test_gateway_cascade_uses_the_trained_router(trained: Path, emulator, gateway) -> None:  # noqa: F811
    messages = [{"role": "user", "content": HARD_PROMPT}]
    ours = load_estimator(trained).score(messages)
    theirs = HeuristicDifficulty().score(messages)
    assert abs(ours - theirs) > 0.1, (ours, theirs)  # the threshold between them tells the two apart
    threshold = (ours + theirs) / 2
    emu = emulator(api="openai", ttft_ms=1, itl_ms=1, tokens=4)
    gw = gateway(
        {
            "endpoints": [_ep("small", emu), _ep("large", emu)],
            "routes": [
                {
                    "name": "auto",
                    "policy": "cascade",
                    "endpoints": ["small"],
                    "premium": ["large"],
                    "threshold": threshold,
                }
            ],
            "gateway": {"difficulty": str(trained)},
        }
    )
    assert gw.app.router.difficulty.name == "trained:features"
    raw = gw.openai().chat.completions.with_raw_response.create(model="auto", messages=messages, max_tokens=8)
    reason = raw.headers["x-tokenrace-route-reason"]
    assert f"difficulty {ours:.2f}" in reason
    assert raw.headers["x-tokenrace-endpoint"] == ("large" if ours > theirs else "small")


def test_config_path_is_relative_to_the_config_file(trained: Path, tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "r.npz").write_bytes(trained.read_bytes())
    config = folder / "tokenrace.yaml"
    endpoint = "endpoints: [{name: e, api: openai-chat, base_url: 'http://127.0.0.1:9/v1', model: m}]\n"
    config.write_text(endpoint + "gateway: {difficulty: r.npz}\n", encoding="utf-8")
    cfg = load_config(config)
    assert cfg.gateway.difficulty == str(folder / "r.npz")
    with Store.open(str(tmp_path / "a.db")) as db:
        assert GatewayApp(cfg, db).router.difficulty.name == "trained:features"
        assert GatewayApp(cfg.model_copy(update={"gateway": GatewayConfig()}), db).router.difficulty.name == "heuristic"


def test_bad_router_path_stops_start_up_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "tokenrace.yaml"
    endpoint = "endpoints: [{name: e, api: openai-chat, base_url: 'http://127.0.0.1:9/v1', model: m}]\n"
    config.write_text(endpoint + "gateway: {difficulty: missing-router.npz}\n", encoding="utf-8")
    with Store.open(str(tmp_path / "a.db")) as db, pytest.raises(ConfigError) as err:
        GatewayApp(load_config(config), db)
    assert str(tmp_path / "missing-router.npz") in str(err.value) and "gateway.difficulty" in str(err.value)
    result = runner.invoke(app, ["serve", "--config", str(config), "--store", str(tmp_path / "b.db"), "--port", "0"])
    assert result.exit_code == 2
    assert "missing-router.npz" in result.output and "router file not found" in result.output
