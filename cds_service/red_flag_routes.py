"""The red-flag route matrix: every concept that feeds a red flag, by each way it can reach a
record, and the populations each rule treats apart (`docs/red-flag-routes.md`).

Which routes exist for a concept is read from its value set alone (its code systems, `measured`
routes, `terms`, medicine `names`); `rules/routes.yaml` says which of them do not apply, and why.
`routes_used` tells, for one evaluated request, which (concept, route) pairs the fired red flags
rested on, so the examples can be checked to cover every route that applies.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from cds_service.cards import rests_on
from cds_service.facts import Evidence, FactSet, build_facts
from cds_service.fhir_model import CodeableConcept, MedicationRequest, MedicationStatement
from cds_service.knowledge import (
    DEFAULT_RULES_DIR,
    Clause,
    Knowledge,
    KnowledgeError,
    Rule,
    Strict,
    ValueSet,
    _parse,
    _read_yaml,
    concepts_read,
    feeding,
)
from cds_service.models import HookRequest
from cds_service.prefetch import Entry, PatientRecord, read_context, read_record
from cds_service.triage import Triage

ROUTES: dict[str, str] = {
    "condition-icd-10-cm": "Condition, ICD-10-CM",
    "condition-snomed": "Condition, SNOMED CT",
    "observation-of-finding": "Observation of the finding",
    "observation-answer": "Observation, coded answer",
    "measurement": "measurement",
    "lab-flag": "laboratory flag",
    "procedure": "Procedure",
    "order-reason": "reason stated on an order, a procedure or a medicine",
    "medicine-code": "medicine by code",
    "medicine-reference": "medicine by reference",
    "medicine-name": "medicine by name",
    "free-text": "free text",
}
"""The ways a concept reaches the facts (`facts.py`), as the matrix's columns."""

_OBSERVATION_SYSTEMS = ("snomed", "loinc")
"""The terminologies FHIR binds Observation.code and its coded value to (US Core, IPS)."""
_PROCEDURE_TAG = "(procedure)"
"""SNOMED CT's semantic tag of a procedure concept, ending its fully specified name."""


class Population(Strict):
    """A population a rule can treat apart, recognised by one kind of clause: an `age`
    comparison in one direction, or a finding or derived fact."""

    title: str
    age: Literal["older", "younger"] | None = None
    finding: str | None = None
    derived: str | None = None

    def marks(self, clause: Clause) -> bool:
        if self.age is not None and clause.age is not None:
            ops = {op for op, _ in clause.age.items()}
            return bool(ops & ({"gte", "gt"} if self.age == "older" else {"lte", "lt"}))
        return (self.finding is not None and clause.finding == self.finding) or (
            self.derived is not None and clause.derived == self.derived
        )


class RouteFile(Strict):
    populations: dict[str, Population] = Field(default_factory=dict)
    not_applicable: dict[str, dict[str, str]] = Field(default_factory=dict, alias="not-applicable")
    """concept -> route -> why the route cannot carry the concept in a real record."""


@dataclass(frozen=True)
class Row:
    concept: str
    problems: tuple[str, ...]
    """The red-flag problems the concept feeds."""
    applicable: frozenset[str]
    """The routes the knowledge base has for the concept."""


@dataclass(frozen=True)
class Matrix:
    rows: list[Row]
    not_applicable: dict[str, dict[str, str]]
    populations: dict[str, Population]

    def cells(self) -> set[tuple[str, str]]:
        """The (concept, route) pairs that apply and are not declared not applicable: each
        needs an example."""
        return {
            (row.concept, route)
            for row in self.rows
            for route in row.applicable
            if route not in self.not_applicable.get(row.concept, {})
        }


def red_flag_rules(knowledge: Knowledge) -> list[Rule]:
    """The rules that derive the red flag (config `prefetch.required_for`)."""
    flag = knowledge.config.prefetch.required_for
    return [rule for rule in knowledge.rules.values() if flag in rule.derive]


def feeders(knowledge: Knowledge, rule: Rule) -> set[str]:
    """The value-set concepts `rule` reads, directly or through the facts other rules derive
    for it (a measurement that shows a finding is that finding's `measurement` route)."""
    rules = [rule, *(r for d in _derived_read(rule) for r in feeding(knowledge.rules.values(), d))]
    return concepts_read(rules)


def _derived_read(rule: Rule) -> set[str]:
    return {c.derived for alternative in rule.match for c in alternative if c.derived}


def applicable(knowledge: Knowledge, value_set: ValueSet) -> frozenset[str]:
    """The routes by which a concept of `value_set` can reach the facts. A procedure code
    (CPT, or SNOMED CT tagged `(procedure)`) is a Procedure's, never a Condition's or an
    Observation's."""
    procedures = [c for c in value_set.codes if c.system == "cpt" or _PROCEDURE_TAG in c.display]
    systems = {code.system for code in value_set.codes if code not in procedures}
    routes: set[str] = {"procedure"} if procedures or value_set.fact == "treatment" else set()
    if value_set.fact == "finding":
        routes |= {f"condition-{s}" for s in ("icd-10-cm", "snomed") if s in systems}
        if systems & set(_OBSERVATION_SYSTEMS):
            routes |= {"observation-of-finding", "observation-answer"}
        if systems & {"icd-10-cm", "snomed"}:
            routes.add("order-reason")  # ServiceRequest.reasonCode (US Core: SNOMED, ICD-10-CM)
        if value_set.measured:
            routes.add("measurement")
        if value_set.terms and knowledge.text_risk is not None:
            routes.add("free-text")
    elif value_set.fact == "observation":
        routes.add("measurement")
        flagged = any(
            clause.observation == value_set.concept and clause.flag is not None
            for rule in knowledge.rules.values()
            for alternative in rule.match
            for clause in alternative
        )
        if flagged:
            routes.add("lab-flag")
    elif value_set.fact == "medication":
        routes |= {"medicine-code", "medicine-reference"}
        if value_set.names:
            routes.add("medicine-name")
    return frozenset(routes)


def build_matrix(knowledge: Knowledge, root: Path = DEFAULT_RULES_DIR) -> Matrix:
    """The matrix of the knowledge base, with `routes.yaml` of `root` checked against it."""
    problems: dict[str, set[str]] = defaultdict(set)
    for rule in red_flag_rules(knowledge):
        for concept in feeders(knowledge, rule):
            problems[concept].add(rule.problem or rule.id)
    rows = [
        Row(concept, tuple(sorted(problems[concept])), applicable(knowledge, vs))
        for concept, vs in knowledge.value_sets.items()
        if concept in problems
    ]
    rows.sort(key=lambda row: (row.problems, row.concept))
    declared = load_route_file(root)
    matrix = Matrix(rows, declared.not_applicable, declared.populations)
    _check(knowledge, matrix, root / "routes.yaml")
    return matrix


def load_route_file(root: Path = DEFAULT_RULES_DIR) -> RouteFile:
    path = root / "routes.yaml"
    return _parse(RouteFile, path, _read_yaml(path))


def _check(knowledge: Knowledge, matrix: Matrix, path: Path) -> None:
    rows = {row.concept: row for row in matrix.rows}
    for concept, routes in matrix.not_applicable.items():
        if concept not in rows:
            raise KnowledgeError(path, f"{concept!r} is not a concept that feeds a red flag")
        for route, reason in routes.items():
            if route not in ROUTES:
                raise KnowledgeError(path, f"{concept}: unknown route {route!r}")
            if route not in rows[concept].applicable:
                raise KnowledgeError(path, f"{concept}: the knowledge base has no {route} route")
            if not reason.strip():
                raise KnowledgeError(path, f"{concept}: {route} needs a reason")
    for key, population in matrix.populations.items():
        named = population.finding or population.derived
        derivable = {d for rule in knowledge.rules.values() for d in rule.derive}
        if population.finding is not None and population.finding not in knowledge.value_sets:
            raise KnowledgeError(path, f"population {key}: unknown finding {named!r}")
        if population.derived is not None and population.derived not in derivable:
            raise KnowledgeError(path, f"population {key}: no rule derives {named!r}")
        marks = (population.age, population.finding, population.derived)
        if sum(mark is not None for mark in marks) != 1:
            raise KnowledgeError(path, f"population {key}: name one of age, finding, derived")


# --- Populations ------------------------------------------------------------------------------


def population_paths(knowledge: Knowledge, rule: Rule, population: Population) -> list[str]:
    """How `rule` treats `population` apart: in its match (directly or through a derived fact
    it reads), its `unless`, or a caution of its card. Not through the red flag: a red-flag
    rule's own row says which population it treats apart."""
    paths = []
    if any(population.marks(c) for alternative in rule.match for c in alternative):
        paths.append("match")
    through = [
        d
        for d in sorted(_derived_read(rule))
        if d != population.derived and _derives_for(knowledge, d, population)
    ]
    paths += [f"match via `{d}`" for d in through]
    paths += [f"unless `{d}`" for d in rule.unless if _derives_for(knowledge, d, population)]
    cautions = [c.if_ for c in rule.card.cautions] if rule.card else []
    paths += [f"caution if `{d}`" for d in cautions if _derives_for(knowledge, d, population)]
    return paths


def _derives_for(knowledge: Knowledge, derived: str, population: Population) -> bool:
    """Whether the derived fact rests on a clause that marks `population`."""
    if population.derived == derived:
        return True
    if derived == knowledge.config.prefetch.required_for:
        return False
    return any(
        population.marks(clause)
        for rule in feeding(knowledge.rules.values(), derived)
        for alternative in rule.match
        for clause in alternative
    )


# --- Markdown -------------------------------------------------------------------------------


def matrix_markdown(knowledge: Knowledge, matrix: Matrix) -> str:
    """The route matrix and the population table, as `docs/red-flag-routes.md`."""
    used = list(ROUTES)
    reasons: list[str] = []
    lines = [
        f"# Red-flag routes of {knowledge.manifest.name} {knowledge.version}",
        "",
        "Generated by `cds-service rules matrix` from `rules/`; do not edit by hand.",
        "",
        "Every concept a red-flag rule reads (directly, or through the facts other rules derive",
        "for it), by each way it can reach a record. **x**: the knowledge base has the route",
        "(the value set's code systems, `measured` routes, `terms` or medicine `names`), and an",
        "example in `fhir_examples/` fires a red flag through it (`tests/test_red_flag_routes.py`",
        "checks). **n/a**: the route exists but cannot carry the concept in a real record, for",
        "the numbered reason below (`rules/routes.yaml`). Blank: no such route for the concept.",
        "Observation routes are for sets with SNOMED CT or LOINC codes (what FHIR binds",
        "Observation.code and its answer to); Procedure for sets with SNOMED CT procedures or CPT;",
        "the reason stated on a draft order (ServiceRequest.reasonCode, order hooks) or recorded",
        "for a procedure done or a medicine (`reasonCode`) for sets with ICD-10-CM or SNOMED CT",
        "codes.",
        "A finding named only in free text raises the risk card that asks the clinician to check",
        "the entry, never the red flag itself.",
        "",
        f"{len(matrix.rows)} concepts, {len(matrix.cells())} cells to cover, "
        f"{sum(len(r) for r in matrix.not_applicable.values())} not applicable.",
        "",
        "| concept | feeds | " + " | ".join(ROUTES[r] for r in used) + " |",
        "|---|---|" + "---|" * len(used),
    ]
    for row in matrix.rows:
        cells = []
        for route in used:
            reason = matrix.not_applicable.get(row.concept, {}).get(route)
            if reason is not None:
                reason = " ".join(reason.split())
                reasons = reasons if reason in reasons else [*reasons, reason]
                cells.append(f"n/a {reasons.index(reason) + 1}")
            else:
                cells.append("x" if route in row.applicable else "")
        title = knowledge.value_sets[row.concept].title
        lines.append(
            f"| `{row.concept}` {title} | {', '.join(row.problems)} | " + " | ".join(cells) + " |"
        )
    lines += ["", "## Not applicable", ""]
    lines += [f"{n}. {reason}" for n, reason in enumerate(reasons, 1)]
    lines += _population_lines(knowledge, matrix)
    return "\n".join(lines) + "\n"


def _population_lines(knowledge: Knowledge, matrix: Matrix) -> list[str]:
    populations = matrix.populations
    lines = [
        "",
        "## Populations",
        "",
        "The rules with a card that treat a population apart, and how (`rules/routes.yaml` names",
        "each population by the clause that marks it; a derived fact counts when it rests on one).",
        "",
        "| rule | " + " | ".join(p.title for p in populations.values()) + " |",
        "|---|" + "---|" * len(populations),
    ]
    for rule in sorted(knowledge.rules.values(), key=lambda r: r.id):
        if rule.card is None:
            continue
        cells = ["; ".join(population_paths(knowledge, rule, p)) for p in populations.values()]
        if any(cells):
            lines.append(f"| `{rule.id}` | " + " | ".join(cells) + " |")
    everywhere = [
        f"{population.title}: every card adds the caution for `{caution.if_}` (config `cautions`)."
        for population in populations.values()
        for caution in knowledge.config.cautions
        if _derives_for(knowledge, caution.if_, population)
    ]
    return [*lines, *(["", *everywhere] if everywhere else [])]


# --- Routes an evaluation used ----------------------------------------------------------------


def routes_used(triage: Triage, request: HookRequest, today: date) -> set[tuple[str, str]]:
    """The (concept, route) pairs behind the red flags that fired for `request` as of `today`,
    and the concepts a text-only entry named on a card that fired."""
    hook = triage.hooks[request.hook]
    context = read_context(request, hook.context)
    record = read_record(request, context, triage.queries, triage.reader(today))
    facts = build_facts(record, triage.knowledge, today)
    engine = triage.engines[hook.id]
    outcome = engine.evaluate(facts.facts)
    entries = _entries(record)
    flagged = {r.id for r in red_flag_rules(triage.knowledge)}
    text_risk = triage.knowledge.text_risk
    used: set[tuple[str, str]] = set()
    for firing in outcome.firings:
        rule = engine.rules[firing.rule_id]
        if any(outcome.holds(name) for name in rule.unless):
            continue  # withdrawn: its card is not shown
        if rule.id in flagged or (rule.card and text_risk in concepts_read([rule])):
            for fact_id in rests_on(firing.fact_ids, outcome) & facts.evidence.keys():
                used |= _fact_routes(triage.knowledge, entries, facts, fact_id, rule.id in flagged)
    return used


def _fact_routes(
    knowledge: Knowledge,
    entries: dict[str, Entry[Any]],
    facts: FactSet,
    fact_id: str,
    red_flag: bool,
) -> set[tuple[str, str]]:
    """The (concept, route) pairs of one fact's evidence: every route of a red flag's facts,
    only the free-text route of another card's."""
    fact: Any = next(f for f in facts.facts if f["id"] == fact_id)
    used = set()
    for evidence in facts.evidence[fact_id]:
        entry = entries.get(evidence.reference or "")
        for concept in _concepts(knowledge, fact, evidence):
            if concept == knowledge.text_risk:
                used |= {(c, "free-text") for c in _named(knowledge, entry)}
            elif red_flag and entry is not None:
                route = _route(knowledge, fact, concept, evidence, entry)
                if route is not None:
                    used.add((concept, route))
    return used


def _concepts(knowledge: Knowledge, fact: Any, evidence: Evidence) -> list[str]:
    """The fact's concept; for the episode, the back-pain concepts of the entry it starts at."""
    if fact["type"] != "episode":
        return [fact["concept"]] if "concept" in fact else []
    uri = {s.name: s.uri for s in knowledge.manifest.code_systems.values()}
    starts = knowledge.config.episode_concepts + knowledge.config.qualified_episode_concepts
    found = knowledge.concepts(uri.get(evidence.system), evidence.code)
    return [concept for concept in found if concept in starts]


def _entries(record: PatientRecord) -> dict[str, Entry[Any]]:
    every: Iterable[Entry[Any]] = [
        *record.conditions,
        *record.observations,
        *record.procedures,
        *record.medications,
        *record.draft_orders,
    ]
    return {entry.reference: entry for entry in every if entry.reference}


def _named(knowledge: Knowledge, entry: Entry[Any] | None) -> list[str]:
    """The finding concepts an uncoded entry's text names (as `facts._add_unclassified` reads
    it); none for an Observation whose value could not be read."""
    if entry is None or entry.resource.resourceType != "Condition":
        return []
    code: CodeableConcept | None = entry.resource.code
    text = "; ".join(filter(None, [code.text, *(c.display for c in code.coding)])) if code else ""
    return knowledge.findings_named(text)


def _route(
    knowledge: Knowledge, fact: Any, concept: str, evidence: Evidence, entry: Entry[Any]
) -> str | None:
    resource = entry.resource
    kind = resource.resourceType
    if evidence.stated:
        return "order-reason"
    if kind == "Condition":
        system = {s.name: key for key, s in knowledge.manifest.code_systems.items()}
        route = f"condition-{system.get(evidence.system)}"
        return route if route in ROUTES else None
    if kind == "Procedure":
        return "procedure"
    if isinstance(resource, MedicationRequest | MedicationStatement):
        if "matched by the name" in evidence.display:
            return "medicine-name"
        return "medicine-reference" if resource.medicationReference else "medicine-code"
    if kind != "Observation":
        return None
    if fact["type"] == "observation":
        return "measurement" if "value" in fact else "lab-flag"
    own = [c for c in resource.code.coding if concept in knowledge.concepts(c.system, c.code)]
    if own:
        return "observation-of-finding"
    answer = resource.valueCodeableConcept
    codings = answer.coding if answer else []
    if any(concept in knowledge.concepts(c.system, c.code) for c in codings):
        return "observation-answer"
    return "measurement"
