"""Turn public Synthea patients into a CDS Hooks `patient-view` regression corpus.

Source data (`SOURCES`; each is pinned to a repository, commit and folder, with its licence):

- `smart-r4`: the SMART sandbox's own R4 Synthea patients,
  https://github.com/smart-on-fhir/generated-sample-data at commit
  25ac8089f0464b8673c7669509dc0bb8f4883773 (2021-06-01), folder `R4/SYNTHEA/` (Synthea v2.4.0,
  tag `synthea-5-2019`). Apache License 2.0 (Copyright 2018 Boston Children's Hospital).
- `exf-california`, `exf-new-york`: https://github.com/Exafluence-Inc/exf-qicore-synthea-dataset
  at commit dcaf099a3c0ffedd21932d225f3e579a65cdf382 (2025-07-28), folders
  `synthea_data_california/fhir/` and `synthea_data_new_york/fhir/` (Synthea as of July 2025 with
  the QI-Core Flexporter mapping: 100 adults each, 3 years of history). MIT License
  (Copyright (c) 2025 Exafluence-Inc). Unlike the older data, they carry real back-pain codes
  (278860009 Chronic low back pain).

Only their data is used here: one FHIR R4 transaction Bundle per patient.

Each patient's bundle becomes the request an EHR would send when the chart is opened, with the
prefetch filled as `cds_service.prefetch.PREFETCH` asks: `patient` is the Patient resource;
`conditions`, `observations`, `procedures`, `medications` (MedicationRequest, and
MedicationStatement if any) and `referrals` (ServiceRequest) are `searchset` Bundles holding the
resources exactly as Synthea wrote them (urn:uuid references, product-level RxNorm codes, the
whole history), with their `fullUrl`s. Everything else (Encounter, Claim, ExplanationOfBenefit,
Immunization, ...) is dropped. A Medication a MedicationRequest points at would be added to
`medications` as a `search.mode: include` entry (the Exafluence data have some;
the SMART data none).

Selection, per source: every patient with a back-pain or spine-related Condition (see
`back_pain_matches`), then the other patients in order of Patient.id while that source's
gzip-compressed requests stay under its `max_mb`, and never fewer than its `min_patients`.
Each source has its own evaluation date: the day after the latest date in its selected requests;
every patient carries it as `date` in corpus.json (`corpus_date` is the first source's date).

    python -m tests.synthea.convert --source smart-r4=<dir or bare git dir> \
        --source exf-california=<dir or bare git dir> --out fhir_examples/synthea
    python -m tests.synthea.convert --out fhir_examples/synthea --update-expected

The first form (re)writes `requests/*.json.gz` and `corpus.json` for the sources given (the
patients of the other sources are kept as they are; add `--update-expected` to evaluate too); the
second re-evaluates the stored corpus with today's rules and rewrites `expected.json` and
`REVIEW.md`.
"""

import argparse
import gzip
import json
import re
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cds_service.errors import CDSError, validation_issues
from cds_service.knowledge import Knowledge, load_knowledge
from cds_service.models import HookRequest, dump
from cds_service.triage import Triage

Json = dict[str, Any]


@dataclass(frozen=True)
class Source:
    """One public folder of Synthea R4 bundles, pinned, and how many of its patients to keep."""

    name: str
    url: str
    commit: str  # recorded when the source is a plain directory (a git dir's HEAD is read)
    path: str  # the folder of the bundles in the repository
    licence: str
    generator: str
    min_patients: int
    max_mb: float


EXAFLUENCE_URL = "https://github.com/Exafluence-Inc/exf-qicore-synthea-dataset"
EXAFLUENCE_COMMIT = "dcaf099a3c0ffedd21932d225f3e579a65cdf382"
EXAFLUENCE_LICENCE = "MIT (LICENSE: Copyright (c) 2025 Exafluence-Inc)"
EXAFLUENCE_GENERATOR = (
    "Synthea as of July 2025 with the QI-Core Flexporter mapping (qicore_withnotdone.yaml), "
    "100 living adults aged 18-100, 3 years of history, seed {seed}"
)
SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        Source(
            name="smart-r4",
            url="https://github.com/smart-on-fhir/generated-sample-data",
            commit="25ac8089f0464b8673c7669509dc0bb8f4883773",
            path="R4/SYNTHEA",
            licence="Apache-2.0 (LICENSE: Copyright 2018 Boston Children's Hospital)",
            generator="Synthea v2.4.0 (tag synthea-5-2019), time-shifted by the SMART sandbox",
            min_patients=200,
            max_mb=25.0,
        ),
        Source(
            name="exf-california",
            url=EXAFLUENCE_URL,
            commit=EXAFLUENCE_COMMIT,
            path="synthea_data_california/fhir",
            licence=EXAFLUENCE_LICENCE,
            generator=EXAFLUENCE_GENERATOR.format(seed=12345) + ", California",
            min_patients=0,
            max_mb=7.5,
        ),
        Source(
            name="exf-new-york",
            url=EXAFLUENCE_URL,
            commit=EXAFLUENCE_COMMIT,
            path="synthea_data_new_york/fhir",
            licence=EXAFLUENCE_LICENCE,
            generator=EXAFLUENCE_GENERATOR.format(seed=123456) + ", New York",
            min_patients=0,
            max_mb=7.5,
        ),
    )
}
DEFAULT_SOURCE = "smart-r4"

HOOK = "patient-view"
USER_ID = "Practitioner/synthea-corpus"

PREFETCH_TYPES: dict[str, tuple[str, ...]] = {
    "conditions": ("Condition",),
    "observations": ("Observation",),
    "procedures": ("Procedure",),
    "medications": ("MedicationRequest", "MedicationStatement"),
    "referrals": ("ServiceRequest",),
}
MEDICATION_KEYS = ("medicationCodeableConcept", "medicationReference")

# --- Selection: back pain and spine-related Conditions, matched generously --------------------

BACK_PAIN_TEXT = re.compile(
    r"back ?pain|backache|dorsalgia|lumbago|lumb(ar|o)|sciatica|radicul|spin(e|al)|vertebra"
    r"|\bdis[ck]s?\b|intervertebral|spondyl|cauda equina|coccy|sacr(al|um|oiliac)"
    r"|thoracic (spine|sprain|strain)|cervical (spine|sprain|strain|radicul|disc)|whiplash"
    r"|neck pain|chronic pain|fibromyalgia",
    re.IGNORECASE,
)
BACK_PAIN_SNOMED = frozenset(
    {
        "279039007",  # Low back pain
        "278860009",  # Chronic low back pain
        "161891005",  # Backache
        "23056005",  # Sciatica
        "82423001",  # Chronic pain (as Synthea codes it)
        "39848009",  # Whiplash injury to neck
        "698754002",  # Chronic paralysis due to lesion of spinal cord
        "95417003",  # Primary fibromyalgia syndrome
    }
)
# ICD-10-CM: dorsopathies M40-M54, vertebral osteoporotic fracture, spinal injuries, cauda equina.
BACK_PAIN_ICD10 = (
    "M4",
    "M50",
    "M51",
    "M53",
    "M54",
    "M80.08",
    "S12",
    "S13",
    "S14",
    "S22.0",
    "S23",
    "S24",
    "S32.0",
    "S32.1",
    "S33",
    "S34",
    "G83.4",
)


def _codings(concept: Any) -> list[Json]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding", []) if isinstance(c, dict)]


def concept_text(concept: Any) -> str:
    """The human name of a CodeableConcept: its text, else its first display, else a code."""
    if not isinstance(concept, dict):
        return "?"
    if isinstance(concept.get("text"), str):
        return str(concept["text"])
    for coding in _codings(concept):
        if isinstance(coding.get("display"), str):
            return str(coding["display"])
    return next((str(c.get("code")) for c in _codings(concept)), "?")


def is_back_pain(condition: Json) -> bool:
    concept = condition.get("code")
    texts = [concept.get("text")] if isinstance(concept, dict) else []
    texts += [c.get("display") for c in _codings(concept)]
    if any(isinstance(t, str) and BACK_PAIN_TEXT.search(t) for t in texts):
        return True
    for coding in _codings(concept):
        system, code = str(coding.get("system", "")), str(coding.get("code", ""))
        if system == "http://snomed.info/sct" and code in BACK_PAIN_SNOMED:
            return True
        if "icd-10" in system.lower() and code.upper().startswith(BACK_PAIN_ICD10):
            return True
    return False


def back_pain_matches(request: Json) -> list[str]:
    """The distinct back-pain / spine Condition names in the request, in record order."""
    names = [concept_text(c.get("code")) for c in resources(request, "conditions")]
    matched = [
        n for c, n in zip(resources(request, "conditions"), names, strict=True) if is_back_pain(c)
    ]
    return list(dict.fromkeys(matched))


# --- Reading the source ------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    name: str
    data: bytes | None  # None: listed but not readable (the reason is in `problem`)
    problem: str | None = None


def is_git_dir(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir()


def _git(git_dir: Path, *args: str) -> bytes:
    command = ["git", "--git-dir", str(git_dir), *args]
    return subprocess.run(command, check=True, capture_output=True).stdout


def git_commit(git_dir: Path) -> str:
    return _git(git_dir, "rev-parse", "HEAD").decode().strip()


def read_git(git_dir: Path, subdir: str) -> Iterator[SourceFile]:
    """The `.json` blobs under `subdir` at HEAD of a bare git directory, in path order."""
    blobs: list[tuple[str, str]] = []
    for record in _git(git_dir, "ls-tree", "-r", "-z", "HEAD", "--", subdir).split(b"\0"):
        meta, _, path = record.partition(b"\t")
        if meta and meta.split()[1] == b"blob" and path.endswith(b".json"):
            blobs.append((path.decode(), meta.split()[2].decode()))
    command = ["git", "--git-dir", str(git_dir), "cat-file", "--batch"]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as git:
        assert git.stdin is not None
        assert git.stdout is not None
        for name, sha in sorted(blobs):
            git.stdin.write(f"{sha}\n".encode())
            git.stdin.flush()
            header = git.stdout.readline().split()
            if len(header) != 3:
                yield SourceFile(name, None, f"blob {sha} is missing from the git directory")
                continue
            data = git.stdout.read(int(header[2]))
            git.stdout.read(1)  # the newline after each object
            yield SourceFile(name, data)
        git.stdin.close()


def read_directory(directory: Path, root: Path) -> Iterator[SourceFile]:
    """The `.json` files under `directory`, named by their path from `root`."""
    for path in sorted(directory.rglob("*.json")):
        yield SourceFile(path.relative_to(root).as_posix(), path.read_bytes())


def read_source(source: Path, subdir: str) -> Iterator[SourceFile]:
    """A bare git dir's `subdir` at HEAD, or a directory's `subdir` (or all of it)."""
    if is_git_dir(source):
        return read_git(source, subdir)
    return read_directory(source / subdir if (source / subdir).is_dir() else source, source)


# --- Conversion --------------------------------------------------------------------------------


def hook_instance(patient_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, patient_id))


def _searchset(matches: list[Json], included: list[Json]) -> Json:
    entries = [
        {"fullUrl": e["fullUrl"], "resource": e["resource"], "search": {"mode": mode}}
        for mode, group in (("match", matches), ("include", included))
        for e in group
    ]
    bundle: Json = {"resourceType": "Bundle", "type": "searchset", "total": len(matches)}
    if entries:
        bundle["entry"] = entries
    return bundle


def _full_url(entry: Json) -> str:
    resource = entry["resource"]
    url = entry.get("fullUrl")
    return url if isinstance(url, str) else f"{resource['resourceType']}/{resource.get('id')}"


def to_request(bundle: Json) -> Json | None:
    """The patient-view request for one patient's bundle; None when it holds no single Patient."""
    entries = [
        {"fullUrl": _full_url(e), "resource": e["resource"]}
        for e in bundle.get("entry", [])
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]
    patients = [e["resource"] for e in entries if e["resource"].get("resourceType") == "Patient"]
    if len(patients) != 1 or not isinstance(patients[0].get("id"), str):
        return None
    patient = patients[0]
    by_url = {e["fullUrl"]: e for e in entries}
    by_url |= {f"{e['resource']['resourceType']}/{e['resource'].get('id')}": e for e in entries}
    prefetch: Json = {"patient": patient}
    for key, types in PREFETCH_TYPES.items():
        matches = [e for e in entries if e["resource"].get("resourceType") in types]
        included: list[Json] = []
        if key == "medications":
            for match in matches:
                ref = match["resource"].get("medicationReference")
                target = by_url.get(ref.get("reference", "")) if isinstance(ref, dict) else None
                if target is not None and target not in included:
                    included.append(target)
        prefetch[key] = _searchset(matches, included)
    return {
        "hook": HOOK,
        "hookInstance": hook_instance(patient["id"]),
        "context": {"userId": USER_ID, "patientId": patient["id"]},
        "prefetch": prefetch,
    }


def resources(request: Json, key: str) -> list[Json]:
    """The matched resources of one prefetch searchset."""
    bundle = request.get("prefetch", {}).get(key) or {}
    return [
        e["resource"]
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode", "match") == "match"
    ]


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def latest_date(value: Any) -> str:
    """The latest YYYY-MM-DD any string in `value` starts with ('' when none)."""
    if isinstance(value, str):
        return value[:10] if _DATE.match(value) else ""
    if isinstance(value, dict):
        return max((latest_date(v) for v in value.values()), default="")
    if isinstance(value, list):
        return max((latest_date(v) for v in value), default="")
    return ""


def encode(request: Json) -> bytes:
    """Deterministic gzip of the request JSON (no timestamp, no file name in the header)."""
    text = json.dumps(request, ensure_ascii=False, separators=(",", ":"))
    return gzip.compress(text.encode(), compresslevel=9, mtime=0)


@dataclass(frozen=True)
class Converted:
    patient_id: str
    source_file: str
    back_pain: list[str]
    latest: str
    deceased: bool
    data: bytes  # the gzip-compressed request


def convert(files: Iterable[SourceFile]) -> tuple[list[Converted], list[Json]]:
    """Every patient of the source, and the files skipped with why."""
    converted: list[Converted] = []
    skipped: list[Json] = []
    for file in files:
        if file.data is None:
            skipped.append({"file": file.name, "reason": file.problem})
            continue
        try:
            bundle = json.loads(file.data)
        except ValueError as exc:
            skipped.append({"file": file.name, "reason": f"not JSON: {exc}"})
            continue
        request = to_request(bundle) if isinstance(bundle, dict) else None
        if request is None:
            skipped.append({"file": file.name, "reason": "no single Patient with an id"})
            continue
        patient = request["prefetch"]["patient"]
        deceased = "deceasedDateTime" in patient or patient.get("deceasedBoolean") is True
        latest = max(latest_date(v) for v in request["prefetch"].values())
        converted.append(
            Converted(
                request["context"]["patientId"],
                file.name,
                back_pain_matches(request),
                latest,
                deceased,
                encode(request),
            )
        )
    ids = Counter(c.patient_id for c in converted)
    duplicates = sorted(pid for pid, n in ids.items() if n > 1)
    if duplicates:
        raise SystemExit(f"patient ids found in more than one file: {duplicates}")
    return converted, skipped


def select(
    patients: list[Converted], min_patients: int, max_bytes: int
) -> tuple[list[Converted], str]:
    """All back-pain patients, then others by id while the corpus fits (at least `min_patients`)."""
    chosen = [p for p in patients if p.back_pain]
    size = sum(len(p.data) for p in chosen)
    others = sorted((p for p in patients if not p.back_pain), key=lambda p: p.patient_id)
    for patient in others:
        if len(chosen) >= min_patients and size + len(patient.data) > max_bytes:
            break
        chosen.append(patient)
        size += len(patient.data)
    taken = len(chosen) - sum(1 for p in chosen if p.back_pain)
    rule = (
        f"all {len(chosen) - taken} patients with a back-pain or spine-related Condition, then "
        f"the first {taken} of the {len(others)} other patients in order of Patient.id"
        f" (kept while the gzip-compressed requests stay under {max_bytes / 1e6:g} MB, and at "
        f"least {min_patients} patients in all)"
    )
    return sorted(chosen, key=lambda p: p.patient_id), rule


@dataclass(frozen=True)
class SourceRun:
    """What one source gave on this run: the patients chosen, and why."""

    source: Source
    commit: str
    chosen: list[Converted]
    rule: str
    skipped: list[Json]
    total: int


def day_after(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


def source_entry(run: SourceRun) -> Json:
    """The corpus.json record of one source: where it is, its date, how patients were chosen."""
    latest = max(p.latest for p in run.chosen)
    return {
        "name": run.source.name,
        "url": run.source.url,
        "commit": run.commit,
        "path": run.source.path,
        "licence": run.source.licence,
        "generator": run.source.generator,
        "latest_data_date": latest,
        "date": day_after(latest),
        "selection": run.rule,
        "patients_in_source": run.total,
        "patients": len(run.chosen),
        "back_pain_patients": sum(1 for p in run.chosen if p.back_pain),
        "bytes": sum(len(p.data) for p in run.chosen),
        "skipped": run.skipped,
    }


def write_corpus(out: Path, runs: list[SourceRun]) -> Json:
    """Write the requests and corpus.json of the sources run; keep the other sources' patients."""
    corpus_path = out / "corpus.json"
    previous = load_corpus(out) if corpus_path.is_file() else {"sources": [], "patients": []}
    ran = {run.source.name for run in runs}
    entries = {s["name"]: s for s in previous["sources"] if s["name"] not in ran}
    entries |= {run.source.name: source_entry(run) for run in runs}
    dates = {name: entry["date"] for name, entry in entries.items()}
    patients: dict[str, list[Json]] = {
        name: [p for p in previous["patients"] if p["source"] == name]
        for name in entries
        if name not in ran
    }
    for run in runs:
        patients[run.source.name] = [
            {
                "id": p.patient_id,
                "source": run.source.name,
                "date": dates[run.source.name],
                "source_file": p.source_file,
                "back_pain": bool(p.back_pain),
                "back_pain_conditions": p.back_pain,
                "deceased": p.deceased,
            }
            for p in run.chosen
        ]
    order = [name for name in SOURCES if name in entries]
    order += sorted(name for name in entries if name not in SOURCES)
    every = [patient for name in order for patient in patients[name]]
    duplicates = sorted(pid for pid, n in Counter(p["id"] for p in every).items() if n > 1)
    if duplicates:
        raise SystemExit(f"patient ids found in more than one source: {duplicates}")
    requests = out / "requests"
    requests.mkdir(parents=True, exist_ok=True)
    keep = {f"{p['id']}.json.gz" for p in every}
    for stale in requests.glob("*.json.gz"):
        if stale.name not in keep:
            stale.unlink()
    for run in runs:
        for patient in run.chosen:
            path = requests / f"{patient.patient_id}.json.gz"
            if not path.is_file() or path.read_bytes() != patient.data:
                path.write_bytes(patient.data)
    corpus: Json = {
        "hook": HOOK,
        "corpus_date": dates[order[0]],
        "bytes": sum(entries[name]["bytes"] for name in order),
        "sources": [entries[name] for name in order],
        "patients": every,
    }
    write_json(corpus_path, corpus)
    return corpus


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


# --- Evaluation: expected.json and REVIEW.md ---------------------------------------------------


def load_corpus(out: Path) -> Json:
    """corpus.json; one written before sources were a list is read as the `smart-r4` source."""
    corpus: Json = json.loads((out / "corpus.json").read_text())
    if "sources" not in corpus:  # the one-source layout
        source = corpus.pop("source")
        corpus["sources"] = [
            {
                "name": DEFAULT_SOURCE,
                **source,
                "generator": SOURCES[DEFAULT_SOURCE].generator,
                "latest_data_date": corpus.pop("latest_data_date"),
                "date": corpus["corpus_date"],
                "selection": corpus.pop("selection"),
                "patients_in_source": corpus.pop("patients_in_source"),
                "patients": len(corpus["patients"]),
                "back_pain_patients": sum(1 for p in corpus["patients"] if p["back_pain"]),
                "bytes": corpus["bytes"],
                "skipped": corpus.pop("skipped"),
            }
        ]
        corpus["patients"] = [
            {"id": p["id"], "source": DEFAULT_SOURCE, "date": corpus["corpus_date"]} | p
            for p in corpus["patients"]
        ]
    return corpus


def patient_date(corpus: Json, patient: Json) -> date:
    """The date a patient's request is evaluated on: its own `date`, else the corpus date."""
    return date.fromisoformat(patient.get("date") or corpus["corpus_date"])


def load_request(out: Path, patient_id: str) -> Json:
    request: Json = json.loads(
        gzip.decompress((out / "requests" / f"{patient_id}.json.gz").read_bytes())
    )
    return request


def summarise(card: Json) -> Json:
    """The parts of a card an expectation pins down (expected.json here, and the examples'
    expectation files in tests/test_examples.py)."""
    summary: Json = {
        "rule": card["extension"]["org.spine-cds.rule"]["id"],
        "indicator": card["indicator"],
    }
    actions = [a for s in card.get("suggestions", []) for a in s["actions"]]
    creates = [a["resource"] for a in actions if a["type"] == "create"]
    if creates:
        first, *others = creates
        summary["specialty_nucc"] = first["performerType"]["coding"][0]["code"]
        summary["priority"] = first["priority"]
        summary["reasons"] = [r["reference"] for r in first.get("reasonReference", [])]
        if others:
            summary["or"] = [r["performerType"]["coding"][0]["code"] for r in others]
    else:
        summary["reasons"] = []
    deletes = [f"delete {a['resourceId']}" for a in actions if a["type"] == "delete"]
    if deletes:
        summary["actions"] = deletes
    return summary


def evaluate(triage: Triage, request: Json, today: date) -> list[Json]:
    """The card summaries for one request; raises CDSError (400) as the service would answer."""
    try:
        body = HookRequest.model_validate(request)
    except ValidationError as exc:
        raise CDSError(400, validation_issues(exc.errors(include_url=False))) from exc
    cards: list[Json] = dump(triage.evaluate(body, HOOK, today))["cards"]
    return [summarise(card) for card in cards]


def describe_error(error: CDSError) -> Json:
    return {
        "status": error.status,
        "issues": [{"expression": i.expression, "message": i.message} for i in error.issues],
    }


def update_expected(out: Path, knowledge: Knowledge | None = None) -> Json:
    corpus = load_corpus(out)
    knowledge = knowledge or load_knowledge()
    triage = Triage(knowledge)
    cards: dict[str, list[Json]] = {}
    rejected: dict[str, Json] = {}
    requests: dict[str, Json] = {}
    for patient in corpus["patients"]:
        pid = patient["id"]
        request = load_request(out, pid)
        try:
            cards[pid] = evaluate(triage, request, patient_date(corpus, patient))
        except CDSError as error:
            rejected[pid] = describe_error(error)
        if patient["back_pain"] or cards.get(pid) or pid in rejected:
            requests[pid] = request  # kept for REVIEW.md only
    expected: Json = {
        "corpus_date": corpus["corpus_date"],
        "dates": {source["name"]: source["date"] for source in corpus["sources"]},
        "ruleset": {"name": knowledge.manifest.name, "version": knowledge.manifest.version},
        "cards": cards,
        "rejected": rejected,
    }
    write_json(out / "expected.json", expected)
    (out / "REVIEW.md").write_text(review(corpus, expected, requests, knowledge))
    return expected


# --- REVIEW.md ---------------------------------------------------------------------------------

RED_FLAG_TERMS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (label, re.compile(pattern, re.IGNORECASE))
    for label, pattern in (
        (
            "cancer",
            r"cancer|neoplasm|carcinoma|malignan|metasta|tumou?r|lymphoma|leuk(a)?emia|myeloma"
            r"|sarcoma|chemotherapy|radiation therapy",
        ),
        (
            "chemotherapy / hormone therapy",
            r"cisplatin|carboplatin|oxaliplatin|paclitaxel|docetaxel|etoposide|leucovorin"
            r"|fluorouracil|leuprolide|tamoxifen|letrozole|anastrozole|methotrexate",
        ),
        ("fracture", r"fracture"),
        ("osteoporosis", r"osteopor|osteopenia|alendron|risedron|ibandron|zoledron|denosumab"),
        (
            "HIV / transplant / immunosuppression",
            r"\bHIV\b|human immunodeficiency|immunodeficien|immunosuppress|transplant"
            r"|cyclosporin|tacrolimus|mycophenol|azathioprine",
        ),
        (
            "corticosteroid",
            r"steroid|prednis|dexamethasone|hydrocortisone|cortisone|budesonide",
        ),
        (
            "anticoagulant / thrombolytic",
            r"warfarin|heparin|enoxaparin|dalteparin|apixaban|rivaroxaban|edoxaban|dabigatran"
            r"|anticoagul|alteplase",
        ),
        (
            "opioid",
            r"oxycodone|hydrocodone|morphine|fentanyl|remifentanil|sufentanil|meperidine"
            r"|pethidine|tramadol|codeine|methadone|buprenorphine|hydromorphone|oxymorphone"
            r"|tapentadol|opioid|opiate|heroin",
        ),
        (
            "substance use",
            r"overdose|drug abuse|drug use|substance|dependence|alcoholism|injection drug",
        ),
        (
            "fever / infection",
            r"fever|febrile|pyrexia|sepsis|septic|osteomyelitis|discitis|abscess|tuberculosis"
            r"|endocarditis|bacter[a]?emia|urinary tract infection|pyelonephritis",
        ),
        ("weight loss", r"weight loss|cachexia|underweight"),
        (
            "neurological / bladder / bowel",
            r"incontinence|retention|saddle|cauda equina|paraplegia|quadriplegia|tetraplegia"
            r"|paralysis|paresis|foot drop|spinal cord|neuropathy",
        ),
        (
            "trauma",
            r"\bfalls?\b|trauma|bullet wound|motor vehicle|concussion|injury",
        ),
    )
)
# Procedures are screened too (chemotherapy, transplant), but not tests and screenings.
_NOT_AN_ITEM = re.compile(r"\btest\b|screening|measurement|examination", re.IGNORECASE)


def _year(value: Any) -> str:
    return value[:4] if isinstance(value, str) and _DATE.match(value) else ""


def _status(resource: Json, element: str) -> str:
    value = resource.get(element)
    if isinstance(value, dict):
        return ",".join(str(c.get("code")) for c in _codings(value))
    return str(value) if value is not None else ""


def _condition_line(condition: Json) -> str:
    onset = _year(condition.get("onsetDateTime")) or _year(
        (condition.get("onsetPeriod") or {}).get("start")
    )
    abated = _year(condition.get("abatementDateTime")) or _year(
        (condition.get("abatementPeriod") or {}).get("end")
    )
    status = _status(condition, "clinicalStatus") or "no status"
    verification = _status(condition, "verificationStatus")
    if verification and verification != "confirmed":
        status += f"/{verification}"
    years = f"{onset or '?'}-{abated}" if abated else f"since {onset or '?'}"
    return f"{concept_text(condition.get('code'))} ({status}, {years})"


def _when(resource: Json) -> str:
    for element in ("authoredOn", "effectiveDateTime", "performedDateTime", "dateAsserted"):
        if _year(resource.get(element)):
            return str(resource[element])
    for element in ("performedPeriod", "effectivePeriod"):
        period = resource.get(element)
        if isinstance(period, dict) and _year(period.get("start")):
            return str(period["start"])
    return ""


def _medication_name(resource: Json, request: Json) -> str:
    if "medicationCodeableConcept" in resource:
        return concept_text(resource["medicationCodeableConcept"])
    reference = (resource.get("medicationReference") or {}).get("reference")
    included = request["prefetch"]["medications"].get("entry", [])
    target = next((e["resource"] for e in included if e["fullUrl"] == reference), None)
    if target is not None:
        return concept_text(target.get("code"))
    return f"medicationReference {reference}"


def _grouped(items: list[tuple[str, str, str]]) -> list[str]:
    """(name, date, status) items -> `name (years x n, last status)`, one line per name."""
    lines: dict[str, list[tuple[str, str]]] = {}
    for name, when, status in items:
        lines.setdefault(name, []).append((when, status))
    out = []
    for name, seen in lines.items():
        seen.sort()
        years = sorted({_year(w) for w, _ in seen if _year(w)})
        span = years[0] if len(years) == 1 else f"{years[0]}-{years[-1]}" if years else "?"
        count = f" x{len(seen)}" if len(seen) > 1 else ""
        out.append(f"{name} ({span}{count}, last {seen[-1][1] or 'no status'})")
    return out


def red_flag_items(request: Json) -> dict[str, list[str]]:
    """Per category, the Conditions, medications and procedures whose name matches it."""
    found: dict[str, list[str]] = {}
    conditions = [(c, concept_text(c.get("code"))) for c in resources(request, "conditions")]
    medications = [(m, _medication_name(m, request)) for m in resources(request, "medications")]
    procedures = [
        (p, concept_text(p.get("code")))
        for p in resources(request, "procedures")
        if not _NOT_AN_ITEM.search(concept_text(p.get("code")))
    ]
    for label, pattern in RED_FLAG_TERMS:
        lines = [_condition_line(c) for c, name in conditions if pattern.search(name)]
        lines += _grouped(
            [
                (f"Rx {name}", _when(m), _status(m, "status"))
                for m, name in medications
                if pattern.search(name)
            ]
        )
        lines += _grouped(
            [
                (f"Proc {name}", _when(p), _status(p, "status"))
                for p, name in procedures
                if pattern.search(name)
            ]
        )
        if lines:
            found[label] = list(dict.fromkeys(lines))
    return found


def _age(birth: Any, on: date) -> str:
    if not isinstance(birth, str) or not _DATE.match(birth):
        return "?"
    born = date.fromisoformat(birth[:10])
    return str(on.year - born.year - ((on.month, on.day) < (born.month, born.day)))


def _cell(lines: Iterable[str]) -> str:
    text = "<br>".join(line.replace("|", "\\|") for line in lines)
    return text or "—"


def _reason_names(request: Json) -> dict[str, str]:
    """`Type/id` and fullUrl of every prefetch resource -> `name (date)` for the card reasons."""
    names: dict[str, str] = {}
    for key in PREFETCH_TYPES:
        for entry in (request["prefetch"].get(key) or {}).get("entry", []):
            resource = entry["resource"]
            if resource["resourceType"] == "Condition":
                text = _condition_line(resource)
            else:
                concept = resource.get("code") or resource.get("medicationCodeableConcept")
                value = resource.get("valueQuantity")
                shown = f" = {value.get('value')} {value.get('unit', '')}" if value else ""
                text = f"{concept_text(concept)}{shown} ({_when(resource)[:10] or '?'})"
            names[entry["fullUrl"]] = text
            names[f"{resource['resourceType']}/{resource.get('id')}"] = text
    return names


def _card_lines(cards: list[Json], request: Json, nucc: dict[str, str]) -> list[str]:
    names = _reason_names(request)
    lines = []
    for card in cards:
        line = f"**{card['rule']}** ({card['indicator']})"
        if "specialty_nucc" in card:
            specialty = nucc.get(card["specialty_nucc"], card["specialty_nucc"])
            line += f" → {specialty} {card['priority']}"
        if card["reasons"]:
            line += ": " + "; ".join(names.get(r, r) for r in card["reasons"])
        lines.append(line)
    return lines


def _outcome(pid: str, expected: Json, request: Json, nucc: dict[str, str]) -> str:
    if pid in expected["rejected"]:
        error = expected["rejected"][pid]
        issues = [f"{i['expression']}: {i['message']}" for i in error["issues"]]
        return _cell([f"**REJECTED {error['status']}**", *issues])
    return (
        _cell(_card_lines(expected["cards"][pid], request, nucc))
        if expected["cards"][pid]
        else "no card"
    )


TABLE_HEAD = [
    "| Patient | Age | Sex | Deceased | Back / spine Conditions | Red-flag-relevant items | "
    "Cards (rule, indicator → referral; reasons) |",
    "|---|---|---|---|---|---|---|",
]


def review(corpus: Json, expected: Json, requests: dict[str, Json], knowledge: Knowledge) -> str:
    nucc = {s.nucc.code: key for key, s in knowledge.specialties.items()}
    patients = corpus["patients"]
    sources = corpus["sources"]
    back = [p for p in patients if p["back_pain"]]
    fired = Counter(c["rule"] for cards in expected["cards"].values() for c in cards)
    fired_back = Counter(c["rule"] for p in back for c in expected["cards"].get(p["id"], []))
    fired_by_source = {
        s["name"]: Counter(
            c["rule"]
            for p in patients
            if p["source"] == s["name"]
            for c in expected["cards"].get(p["id"], [])
        )
        for s in sources
    }

    def count(name: str, test: Any) -> int:
        return sum(1 for p in patients if p["source"] == name and test(p))

    out = [
        "# Synthea corpus: cards for clinical review",
        "",
        f"Generated by `python -m tests.synthea.convert --update-expected`; rule set "
        f"{expected['ruleset']['name']} {expected['ruleset']['version']}, evaluated as "
        "`patient-view`, each patient on the date of its source (the day after the latest date "
        "in that source's data).",
        "",
        "## Sources",
        "",
        "| Source | Data | Licence | Date | Patients | Back-pain | With a card | Rejected |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| `{s['name']}` | {s['url']} @ `{s['commit'][:12]}`, `{s['path']}`: "
            f"{s['generator']} | {s['licence']} | **{s['date']}** | "
            f"{count(s['name'], lambda p: True)} | {count(s['name'], lambda p: p['back_pain'])} | "
            f"{count(s['name'], lambda p: bool(expected['cards'].get(p['id'])))} | "
            f"{count(s['name'], lambda p: p['id'] in expected['rejected'])} |"
            for s in sources
        ],
        "",
        f"{len(patients)} patients, {len(back)} with a back-pain or spine-related Condition "
        f"(matched generously: chronic pain, neck pain, whiplash, spinal cord lesion, fibromyalgia "
        f"count); {sum(1 for c in expected['cards'].values() if c)} patients get at least one "
        f"card, {len(expected['rejected'])} requests are rejected.",
        "",
        "Ages are at the patient's evaluation date (a deceased patient is evaluated as if alive; "
        "the `Deceased` column gives the date of death). Condition lines are `name (clinical "
        "status, onset-abatement year)`; `Rx` = MedicationRequest (`years x orders, last status`); "
        "`Proc` = Procedure. Red-flag-relevant items are found by keyword in the names, so they "
        "are a reading aid, not what the rules matched: the rules work on codes.",
        "",
        "## Cards fired",
        "",
        "| rule | all patients | back-pain patients | "
        + " | ".join(f"`{s['name']}`" for s in sources)
        + " |",
        "|---|---|---|" + "---|" * len(sources),
        *[
            f"| {rule} | {n} | {fired_back.get(rule, 0)} | "
            + " | ".join(str(fired_by_source[s["name"]].get(rule, 0)) for s in sources)
            + " |"
            for rule, n in sorted(fired.items())
        ],
        "",
        "## Back-pain and spine-related patients",
    ]
    for source in sources:
        rows = [p for p in back if p["source"] == source["name"]]
        out += ["", f"### `{source['name']}` (evaluated on {source['date']})", "", *TABLE_HEAD]
        for patient in rows:
            request = requests[patient["id"]]
            out.append(_row(corpus, patient, request, expected, nucc, back_pain=True))
        if not rows:
            out.append("| — | | | | | | |")
    others = [
        p
        for p in patients
        if not p["back_pain"]
        and (expected["cards"].get(p["id"]) or p["id"] in expected["rejected"])
    ]
    out += [
        "",
        "## Other patients that get a card or are rejected",
        "",
        "No back-pain Condition in the record: a card here may be a false positive.",
        "",
        *TABLE_HEAD,
    ]
    for patient in others:
        request = requests[patient["id"]]
        out.append(_row(corpus, patient, request, expected, nucc, back_pain=False))
    if not others:
        out.append("| — | | | | | | |")
    return "\n".join(out) + "\n"


def _row(
    corpus: Json,
    patient: Json,
    request: Json,
    expected: Json,
    nucc: dict[str, str],
    *,
    back_pain: bool,
) -> str:
    today = patient_date(corpus, patient)
    source = "" if back_pain else f"<br>{patient['source']}"
    resource = request["prefetch"]["patient"]
    died = resource.get("deceasedDateTime")
    deceased = "yes" if resource.get("deceasedBoolean") else "no"
    if isinstance(died, str) and _DATE.match(died):
        age_then = _age(resource.get("birthDate"), date.fromisoformat(died[:10]))
        deceased = f"{died[:10]} (aged {age_then})"
    spine = [_condition_line(c) for c in resources(request, "conditions") if is_back_pain(c)]
    flags = red_flag_items(request)
    flag_lines = [f"**{label}:** " + "; ".join(items) for label, items in flags.items()]
    return (
        f"| `{patient['id']}`{source} | {_age(resource.get('birthDate'), today)} | "
        f"{resource.get('gender', '?')} | {deceased} | {_cell(spine if back_pain else [])} | "
        f"{_cell(flag_lines)} | {_outcome(patient['id'], expected, request, nucc)} |"
    )


# --- Command line ------------------------------------------------------------------------------


def parse_source(value: str) -> tuple[Source, Path]:
    """`NAME=PATH` (NAME one of SOURCES), or a bare PATH for the `smart-r4` source."""
    name, sep, path = value.partition("=")
    if not sep:
        name, path = DEFAULT_SOURCE, value
    if name not in SOURCES:
        known = ", ".join(SOURCES)
        raise argparse.ArgumentTypeError(f"unknown source {name!r} (known: {known})")
    return SOURCES[name], Path(path)


def run_source(
    source: Source, location: Path, min_patients: int | None, max_mb: float | None
) -> SourceRun:
    """Convert one source and choose its patients."""
    commit = git_commit(location) if is_git_dir(location) else source.commit
    patients, skipped = convert(read_source(location, source.path))
    for item in skipped:
        print(f"{source.name}: skipped {item['file']}: {item['reason']}", file=sys.stderr)
    if not patients:
        raise SystemExit(f"{source.name}: no patient found under {location}")
    chosen, rule = select(
        patients,
        source.min_patients if min_patients is None else min_patients,
        int((source.max_mb if max_mb is None else max_mb) * 1e6),
    )
    return SourceRun(source, commit, chosen, rule, skipped, len(patients))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.synthea.convert", description=__doc__)
    parser.add_argument(
        "--source",
        type=parse_source,
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help=f"a directory of bundles or a bare git dir for one of {', '.join(SOURCES)} "
        f"(a bare PATH is {DEFAULT_SOURCE}); may be given once per source",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--update-expected", action="store_true")
    parser.add_argument("--min-patients", type=int, help="override every source's minimum")
    parser.add_argument("--max-mb", type=float, help="override every source's size budget")
    args = parser.parse_args(argv)
    if not args.source and not args.update_expected:
        parser.error("give --source to convert, --update-expected to evaluate, or both")
    names = [source.name for source, _ in args.source]
    if len(set(names)) != len(names):
        parser.error(f"a source is given more than once: {names}")
    if args.source:
        runs = [
            run_source(source, location, args.min_patients, args.max_mb)
            for source, location in args.source
        ]
        corpus = write_corpus(args.out, runs)
        for entry in corpus["sources"]:
            state = "converted" if entry["name"] in names else "kept"
            print(
                f"{entry['name']} ({state}): {entry['patients']} of "
                f"{entry['patients_in_source']} patients ({entry['back_pain_patients']} with "
                f"back pain), {entry['bytes'] / 1e6:.1f} MB, date {entry['date']}"
            )
        print(f"corpus: {len(corpus['patients'])} patients, {corpus['bytes'] / 1e6:.1f} MB")
    if args.update_expected:
        expected = update_expected(args.out)
        for pid, error in expected["rejected"].items():
            issues = "; ".join(f"{i['expression']}: {i['message']}" for i in error["issues"])
            print(f"rejected {pid} ({error['status']}): {issues}", file=sys.stderr)
        with_cards = sum(1 for cards in expected["cards"].values() if cards)
        print(
            f"expected.json: {with_cards} patients with cards, {len(expected['rejected'])} rejected"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
