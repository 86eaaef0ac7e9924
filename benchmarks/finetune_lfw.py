"""Fine-tuning on LFW, identity-disjoint: train on peopleDevTrain identities, test on pairsDevTest.

    python benchmarks/finetune_lfw.py [--lfw-dir DIR] [--domains none,lowres:16,gray]
        [--runs defaults,head/frozen,from_level:5/calibrated,all/frozen] [--loss metric,cosface,arcface]
        [--steps-head N] [--steps-full N] [--lr-head LR] [--lr-full LR] [--out finetune-bench]

For each domain (a degradation applied to train, validation and test chips alike) it evaluates the
shipped model and every run on pairsDevTest (10 interleaved folds), and prints a table: accuracy,
VAL@FAR=1e-3, accuracy at dlib's fixed 0.6 threshold, minutes of training. A run is
"strategy/bn" (trained once per loss in --loss) or "strategy/bn/loss"; "defaults" is
`pfd.finetune(train, out)` with nothing set (strategy "auto", its steps and schedule). Validation
during training uses held-out DevTrain identities (never DevTest). Each model is also run on the
clean domain, to show what fine-tuning on a shifted domain costs on clean faces. Rows are written
to OUT/results.json as they finish; a rerun skips the rows already there.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import aligned_faces, pair_chips

import pyfacedlib as pfd
from pyfacedlib import datasets
from pyfacedlib.bench import default_lfw_dir, resolve_lfw
from pyfacedlib.evaluate import verification


def devtrain_faces(images: Path, lfw_root: Path, min_images: int, max_images: int, few: str | None = None):
    """peopleDevTrain faces: every identity with >= min_images (up to max_images each), or with
    `few` = "PEOPLE:IMAGES:SEED" a user-like set: PEOPLE identities drawn at random (most with one
    photo, as in LFW), up to 3 photos each, then photos beyond each identity's first dropped at
    random until IMAGES remain."""
    people = datasets.read_lfw_people(lfw_root / "peopleDevTrain.txt")[0]
    paths, labels = [], []
    if few:
        count_people, count_images, seed = (int(v) for v in few.split(":"))
        rng = np.random.default_rng(seed)
        chosen = [people[i] for i in sorted(rng.choice(len(people), count_people, replace=False))]
        picks = [(name, i) for name, count in chosen for i in range(1, min(count, 3) + 1)]
        extra = [k for k, (_, i) in enumerate(picks) if i > 1]
        drop = set(rng.choice(extra, max(0, len(picks) - count_images), replace=False).tolist()) if extra else set()
        for k, (name, i) in enumerate(picks):
            if k not in drop:
                paths.append(datasets.lfw_image(images, name, i))
                labels.append(name)
    for name, count in ([] if few else people):
        if count >= min_images:
            for i in range(1, min(count, max_images) + 1):
                paths.append(datasets.lfw_image(images, name, i))
                labels.append(name)
    faces = aligned_faces(paths, labels)
    return faces.chips, faces.labels


def devtest_pairs(images: Path, lfw_root: Path):
    pairs = datasets.read_lfw_pairs(lfw_root / "pairsDevTest.txt")
    unique, first, second = datasets.pair_images(pairs, images)
    return pair_chips(unique), first, second, np.array([p.same for p in pairs])


def evaluate(model: str | None, chips, first, second, same) -> dict:
    d_all = pfd.FaceEmbedder(model).embed_chips(chips).astype(np.float64)
    d = np.linalg.norm(d_all[first] - d_all[second], axis=1)
    r = verification(d, same, fold_ids=np.arange(len(d)) % 10)
    return {"accuracy": r.accuracy_mean, "accuracy_std": r.accuracy_std, "val_at_far_1e_3": r.val_at_far_1e_3,
            "accuracy_at_0_6": r.accuracy_at_0_6}


def expand_runs(runs: str, losses: str) -> list[str]:
    """"strategy/bn" once per loss, "strategy/bn/loss" and "defaults" as they are."""
    out = []
    for run in runs.split(","):
        out.extend([run] if run.split("+")[0] == "defaults" or run.split("+")[0].count("/") == 2
                   else [f"{run}/{loss}" for loss in losses.split(",")])
    return out


def run_settings(run: str, args: argparse.Namespace) -> dict:
    """finetune's keywords for a run name: "defaults" or "strategy/bn/loss" (with the --steps-*/--lr-*
    options), each optionally followed by "+key=value" settings (e.g. "defaults+lr=5e-05")."""
    base, *extras = run.split("+")
    settings: dict = {}
    if base != "defaults":
        strategy, bn, loss = base.split("/")
        head = strategy == "head"
        settings = {"strategy": strategy, "bn": bn, "loss": loss,
                    "steps": args.steps_head if head else args.steps_full,
                    "lr": args.lr_head if head else args.lr_full}
    for extra in extras:
        key, value = extra.split("=", 1)
        settings[key] = value if key in ("strategy", "bn", "loss", "schedule", "singletons") else float(value)
        if key in ("steps", "val_every", "checkpoint_every", "patience"):
            settings[key] = int(float(value))
    return {k: v for k, v in settings.items() if v is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw-dir", default=None)
    parser.add_argument("--domains", default="lowres:16,none")
    parser.add_argument("--runs", default="defaults,head/frozen,all/frozen")
    parser.add_argument("--loss", default="metric", help="losses of the strategy/bn runs, comma-separated")
    parser.add_argument("--steps-head", type=int, default=None, help="steps of head runs (default: finetune's)")
    parser.add_argument("--steps-full", type=int, default=None,
                        help="steps of from_level/all runs (default: finetune's)")
    parser.add_argument("--lr-head", type=float, default=None, help="learning rate of head runs (default: finetune's)")
    parser.add_argument("--lr-full", type=float, default=None,
                        help="learning rate of from_level/all runs (default: finetune's)")
    parser.add_argument("--min-images", type=int, default=3)
    parser.add_argument("--max-images", type=int, default=15)
    parser.add_argument("--few", default=None, metavar="PEOPLE:IMAGES:SEED",
                        help="train on a user-like set instead: PEOPLE random peopleDevTrain identities, most with "
                             "one photo, IMAGES photos in all (e.g. 1660:2000:0)")
    parser.add_argument("--max-minutes", type=float, default=None, help="every run's time budget")
    parser.add_argument("--seeds", default="0", help="fine-tuning seeds, comma-separated (rows per seed)")
    parser.add_argument("--out", default="finetune-bench")
    args = parser.parse_args()

    images, _, _ = resolve_lfw(args.lfw_dir or default_lfw_dir(), None)
    lfw_root = images.parent
    train_chips, train_labels = devtrain_faces(images, lfw_root, args.min_images, args.max_images, args.few)
    test_chips, first, second, same = devtest_pairs(images, lfw_root)
    print(f"train: {len(train_chips)} faces of {len(set(train_labels))} peopleDevTrain identities; "
          f"test: {len(same)} pairsDevTest pairs")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.json"
    rows = json.loads(results.read_text()) if results.exists() else []

    def record(row: dict) -> None:
        rows.append(row)
        print(row, flush=True)
        results.write_text(json.dumps(rows, indent=1))

    done = {(r["domain"], r["run"], r.get("seed", 0)) for r in rows}
    seeds = [int(v) for v in args.seeds.split(",")]
    for domain in args.domains.split(","):
        shifted_train = datasets.degrade(train_chips, domain)
        shifted_test = datasets.degrade(test_chips, domain)
        if (domain, "shipped", 0) not in done:
            record({"domain": domain, "run": "shipped", **evaluate(None, shifted_test, first, second, same),
                    "minutes": 0.0, "clean_accuracy": evaluate(None, test_chips, first, second, same)["accuracy"]})
        for run, seed in ((run, seed) for run in expand_runs(args.runs, args.loss) for seed in seeds):
            if (domain, run, seed) in done:
                continue
            settings = run_settings(run, args)
            chips, labels, val = shifted_train, list(train_labels), None
            if settings.pop("singletons", None) == "pairs":
                # experiment: one-photo identities join the training side only, each photo twice (two
                # augmented views make a pair); validation = finetune's own split of the others
                names, counts = np.unique(train_labels, return_counts=True)
                single = np.isin(train_labels, names[counts == 1])
                _, val_ids = datasets.identity_split(sorted(set(names[counts > 1].tolist())), [0.8, 0.2], seed=seed)
                held = np.isin(train_labels, val_ids)
                keep = ~held
                chips = np.concatenate([shifted_train[keep], shifted_train[single]])
                labels = [n for n, k in zip(train_labels, keep) if k] + [n for n, s in zip(train_labels, single) if s]
                val = (shifted_train[held], [n for n, h in zip(train_labels, held) if h])
            if args.max_minutes is not None:
                settings["max_minutes"] = args.max_minutes
            t = time.perf_counter()
            name = run.replace("/", "_").replace(":", "").replace("+", "_").replace("=", "")
            target = out / domain.replace(":", "") / f"{name}-seed{seed}"
            result = pfd.finetune((chips, labels), target, val=val, resume=False, progress=True, seed=seed, **settings)
            minutes = (time.perf_counter() - t) / 60
            record({"domain": domain, "run": run, "seed": seed,
                    **evaluate(result.affine_model, shifted_test, first, second, same),
                    "minutes": round(minutes, 1), "steps": result.steps, "best_step": result.best_step,
                    "strategy": result.strategy, "loss": result.loss, "descriptor_scale": result.descriptor_scale,
                    "validation": result.best_validation,
                    "clean_accuracy": evaluate(result.affine_model, test_chips, first, second, same)["accuracy"]})
    print("\n| domain | run | DevTest accuracy | VAL@FAR=1e-3 | accuracy at 0.6 | clean DevTest accuracy "
          "| training minutes |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['domain']} | {r['run']} (seed {r.get('seed', 0)}) "
              f"| {100 * r['accuracy']:.2f}% ± {100 * r['accuracy_std']:.2f} | "
              f"{100 * r['val_at_far_1e_3']:.2f}% | {100 * r['accuracy_at_0_6']:.2f}% | "
              f"{100 * r['clean_accuracy']:.2f}% | {r['minutes']} |")


if __name__ == "__main__":
    main()
