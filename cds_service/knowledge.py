"""The clinical knowledge base in `rules/`: value sets, rules, specialties, guidelines, config.

Everything is loaded once, checked against its schema and cross-checked (every concept, threshold,
specialty, guideline and derived fact a rule names must exist), so a broken file stops start-up
with a message naming the file and the problem.
"""

import operator
import re
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cds_service.codes import CodeIndex

FactKind = Literal["finding", "observation", "order", "treatment", "medication", "irrelevant"]
"""What a value set's codes become: a fact of that type, or (`irrelevant`) nothing: entries known
to have no bearing on back-pain triage, kept out of the list of what the rules could not judge."""
Indicator = Literal["info", "warning", "critical"]
Priority = Literal["routine", "urgent", "stat"]
Mode = Literal["active", "silent"]
Rating = Literal["appropriate", "not-appropriate"]
"""A card's verdict on the order it judged (Argonaut PAMA rating codes)."""
"""A silent (shadow) rule is evaluated and audited like an active one; its card is not shown."""

M = TypeVar("M", bound=BaseModel)


def _default_rules_dir() -> Path:
    """The knowledge base shipped in the wheel (cds_service/rules), else the checkout's rules/."""
    package = Path(__file__).resolve().parent
    shipped = package / "rules"
    return shipped if (shipped / "ruleset.yaml").is_file() else package.parent / "rules"


DEFAULT_RULES_DIR = _default_rules_dir()


class KnowledgeError(Exception):
    """A rule file, value set or config file is invalid."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Code(Strict):
    """A code of a value set; with `descendants`, an ICD-10-CM root that includes its subtree."""

    system: str
    code: str
    display: str
    descendants: bool = False
    source: str | None = None
    """Its key in the value set's `sources` (ICD-10-CM codes are checked against the tabular)."""


class Source(Strict):
    """A published terminology source a value set's codes were checked against."""

    title: str
    url: str
    version: str


class UnitConversion(Strict):
    """value_in_canonical_unit = value * factor + offset."""

    factor: float = 1.0
    offset: float = 0.0
    aliases: list[str] = []
    """Other spellings of the unit in `Quantity.unit` text (`F`, `deg F`). Units are compared
    case-blind, without spaces, brackets or a degree sign (`unit_key`)."""


def unit_key(unit: str) -> str:
    """A unit as compared: `[degF]`, `°F` and `deg f` read alike, and so do `F` and `f`
    (remembered for units of up to 32 characters: they come from requests)."""
    return _remembered_unit_key(unit) if len(unit) <= 32 else _unit_key(unit)


def _unit_key(unit: str) -> str:
    return re.sub(r"[\s\[\]°º_.]", "", unit).lower()


_remembered_unit_key = lru_cache(maxsize=1024)(_unit_key)


class Risk(Strict):
    """Why a finding concept is a risk for a serious cause of back pain, for a card to say."""

    means: str
    """What it may mean for this back pain, in a few words."""
    guideline: str
    says: str
    """The guideline's sentence that makes it a risk."""
    from_text: bool = False
    """Found not by code but in the text of entries no value set classifies, by the `terms` of
    the finding sets (a red flag written, not coded)."""


Threshold = float | str


COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "gte": operator.ge,
    "gt": operator.gt,
    "lte": operator.le,
    "lt": operator.lt,
}
"""What each comparison operator of a rule file means (the engine's `$gte`... likewise)."""


class Comparison(Strict):
    gte: Threshold | None = None
    gt: Threshold | None = None
    lte: Threshold | None = None
    lt: Threshold | None = None

    def items(self) -> Iterator[tuple[str, Threshold]]:
        for op in ("gte", "gt", "lte", "lt"):
            bound = getattr(self, op)
            if bound is not None:
                yield op, bound

    def admits(self, value: float, threshold: Callable[[Threshold], float]) -> bool:
        """`value` meets every bound (a named bound read through `threshold`)."""
        return all(COMPARE[op](value, threshold(bound)) for op, bound in self.items())

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not any(True for _ in self.items()):
            raise ValueError("a comparison needs one of gte, gt, lte, lt")
        return self


class Measured(Strict):
    """A route by which a finding reaches a record as a measurement: a result of the
    observation concept `observation` (in its canonical unit) that meets `value`, or a fall of
    at least `fall_percent` from the highest earlier result to the latest, within the
    concept's lookback. A finding of `unless` recorded in the record explains the measurement:
    the route is not met (an intended weight loss is not unexplained weight loss)."""

    observation: str
    value: Comparison | None = None
    fall_percent: float | str | None = None
    guideline: str
    """Where the threshold or the trend comes from."""
    unless: list[str] = []

    @model_validator(mode="after")
    def _one_test(self) -> Self:
        if (self.value is None) == (self.fall_percent is None):
            raise ValueError("a measured route names one of value, fall_percent")
        return self


class ValueSet(Strict):
    concept: str
    title: str
    fact: FactKind
    note: str | None = None
    sources: dict[str, Source] = {}
    names: list[str] = []
    """Medication sets: ingredient names, the labelled fallback for uncoded medicine text."""
    not_forms: list[str] = []
    """Medication sets: words of a medicine's text that name a form outside the concept
    (`topical`, `ointment` for a systemic concept); such an entry does not count, by code or
    by name."""
    terms: list[str] = []
    """Finding sets: words that name the concept in text. An entry no value set classifies
    (text only, an unknown code system) whose text names one is a risk (`Risk.from_text`)."""
    sequela_is_current: bool = False
    """An ICD-10-CM sequela code (7th character S) still means the disease is there (osteoporosis
    with a healed fracture): only an injury's late effect is history."""
    counts_when_inactive: bool = False
    """A Condition counts whatever its clinical status (a history of cancer stays relevant)."""
    risk: Risk | None = None
    """A finding set of a risk block: its entries are a risk for a serious cause of back pain
    when no rule that can raise a red flag reads them."""
    measured: list[Measured] = []
    """Finding sets: the measurements that show the finding (a T-score, a weight trend)."""
    category: str | None = None
    """Observation sets: the FHIR observation-category their results are filed under (what
    the service's prefetch asks the EHR for)."""
    unit: str | None = None
    units: dict[str, UnitConversion] = {}
    positive: list[Code] = []
    """Coded results (valueCodeableConcept) that mean positive, for `positive: true` clauses."""
    codes: list[Code] = []

    @model_validator(mode="after")
    def _units_for_observations(self) -> Self:
        quantity = self.unit is not None and self.unit in self.units
        if self.fact == "observation" and not (quantity or self.positive):
            raise ValueError("an observation value set needs `unit` and `units`, or `positive`")
        if (self.fact == "observation") != (self.category is not None):
            raise ValueError("an observation value set, and only one, names its `category`")
        return self

    @model_validator(mode="after")
    def _sources_exist(self) -> Self:
        for code in [*self.codes, *self.positive]:
            if code.source is not None and code.source not in self.sources:
                raise ValueError(f"code {code.code}: source {code.source!r} is not in `sources`")
            if code.descendants and code.system != "icd-10-cm":
                raise ValueError(f"code {code.code}: `descendants` is for ICD-10-CM codes only")
        if (self.names or self.not_forms) and self.fact != "medication":
            raise ValueError("`names` and `not_forms` are for medication value sets only")
        if self.risk and self.fact != "finding":
            raise ValueError("`risk` is for finding value sets only")
        if self.terms and self.fact != "finding":
            raise ValueError("`terms` is for finding value sets only")
        if self.measured and self.fact != "finding":
            raise ValueError("`measured` is for finding value sets only")
        if not self.codes and not (self.risk and self.risk.from_text):
            raise ValueError("a value set needs `codes` (only a risk found in text has none)")
        return self


class Clause(Strict):
    """One condition of a rule; it matches one fact."""

    finding: str | None = None
    observation: str | None = None
    order: str | None = None
    treatment: str | None = None
    medication: str | None = None
    derived: str | None = None
    episode_weeks: Comparison | None = Field(None, alias="episode-weeks")
    onset_age: Comparison | None = Field(None, alias="onset-age")
    age: Comparison | None = None
    value: Comparison | None = None
    positive: bool | None = None
    flag: Literal["high", "low", "abnormal"] | None = None
    """The laboratory's own interpretation of a result (Observation.interpretation)."""
    weeks: Comparison | None = None
    span_weeks: Comparison | None = Field(None, alias="span-weeks")
    last_days: Comparison | None = Field(None, alias="last-days")
    """Days since the latest dated entry of a finding or a treatment (a recent procedure)."""
    course_weeks: Comparison | None = Field(None, alias="course-weeks")
    """Weeks of a treatment or medicine within the current back-pain episode."""
    sessions: Comparison | None = None
    """Sessions of a treatment done within the current back-pain episode."""
    current: bool | None = None
    new: bool | None = None
    """A finding that started (or was recorded) within `new_finding_days`, or is undated."""

    @model_validator(mode="after")
    def _one_subject(self) -> Self:
        subjects = [k for k in _SUBJECTS if getattr(self, k) is not None]
        if len(subjects) != 1:
            raise ValueError(f"a clause names exactly one of {', '.join(_SUBJECTS)}")
        observed = (self.value, self.positive, self.flag)
        if any(part is not None for part in observed) and self.observation is None:
            raise ValueError("`value`, `positive` and `flag` apply to an observation clause only")
        if self.weeks is not None and self.treatment is None and self.medication is None:
            raise ValueError("`weeks` applies to a treatment or medication clause only")
        if (self.span_weeks is not None or self.current is not None) and self.medication is None:
            raise ValueError("`span-weeks` and `current` apply to a medication clause only")
        if self.new is not None and self.finding is None:
            raise ValueError("`new` applies to a finding clause only")
        if self.last_days is not None and self.finding is None and self.treatment is None:
            raise ValueError("`last-days` applies to a finding or treatment clause only")
        if self.course_weeks is not None and self.treatment is None and self.medication is None:
            raise ValueError("`course-weeks` applies to a treatment or medication clause only")
        if self.sessions is not None and self.treatment is None:
            raise ValueError("`sessions` applies to a treatment clause only")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in _SUBJECTS if getattr(self, k) is not None)


_SUBJECTS = (
    "finding",
    "observation",
    "order",
    "treatment",
    "medication",
    "derived",
    "episode_weeks",
    "onset_age",
    "age",
)


class Referral(Strict):
    specialty: str
    priority: Priority


class Caution(Strict):
    """A line the card adds when a derived fact holds (e.g. a medicine to avoid, and why)."""

    if_: str = Field(alias="if")
    say: str


class CardSpec(Strict):
    """What a rule's card says and suggests.

    `refer` is the recommended referral and `or_refer` the alternatives (the clinician picks at
    most one); `remove-order` removes the matched draft order (alone, or with each referral:
    "replace this order by that referral"). With none of these the card is advice only.
    `precedence` breaks ties between equally urgent cards of one problem (lower wins).
    """

    indicator: Indicator
    summary: Annotated[str, Field(min_length=1, max_length=139)]
    refer: Referral | None = None
    or_refer: list[Referral] = Field([], alias="or-refer")
    remove_order: bool = Field(False, alias="remove-order")
    precedence: int = 100
    cautions: list[Caution] = []
    reassures: bool = False
    """The card says no red flag was found in the coded record: it lists the active entries
    that no value set classifies (what the rules could not judge)."""

    @model_validator(mode="after")
    def _alternatives_need_a_referral(self) -> Self:
        if self.or_refer and self.refer is None:
            raise ValueError("`or-refer` lists alternatives to a `refer`")
        return self

    @property
    def referrals(self) -> list[Referral]:
        return [self.refer, *self.or_refer] if self.refer else []


class Rule(Strict):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    version: str
    title: str
    when: str
    then: str
    guideline: str
    hooks: list[str] = Field(min_length=1)
    mode: Mode = "active"
    problem: str | None = None
    match: list[list[Clause]] = Field(min_length=1)
    derive: list[str] = []
    unless: list[str] = []
    card: CardSpec | None = None
    rates_order: Rating | None = Field(None, alias="rates-order")
    """The rule's verdict on the draft order it matched, answered as a systemAction (an update
    of the order with that rating, `ratings.py`); with or without a card."""

    @model_validator(mode="after")
    def _does_something(self) -> Self:
        if self.card is None and not self.derive:
            raise ValueError("a rule needs a `card`, a `derive` list, or both")
        if self.card is not None and self.problem is None:
            raise ValueError("a rule with a card needs a `problem` (cards are one per problem)")
        if self.mode == "silent" and self.card is None:
            raise ValueError("only a rule with a card can be silent (its card is what is held)")
        if any(not alternative for alternative in self.match):
            raise ValueError("each `match` alternative needs at least one clause")
        rates = self.rates_order is not None
        if rates and not all(any(c.order for c in alt) for alt in self.match):
            raise ValueError("`rates-order` needs an `order` clause in every `match` alternative")
        return self


class CodeDisplay(Strict):
    code: str
    display: str


class Specialty(Strict):
    title: str
    nucc: CodeDisplay
    referral: CodeDisplay | None = None
    nucc_family: str | None = None
    """The NUCC classification prefix (e.g. `2251`, Physical Therapist): a referral whose
    performerType carries any code under it (a sub-specialisation) is to this specialty."""

    def is_performer(self, nucc_code: str | None) -> bool:
        """True when a performerType NUCC code names this specialty (or one of its family)."""
        if nucc_code is None:
            return False
        return nucc_code == self.nucc.code or bool(
            self.nucc_family and nucc_code.startswith(self.nucc_family)
        )

    @model_validator(mode="after")
    def _own_code_in_family(self) -> Self:
        if self.nucc_family and not self.nucc.code.startswith(self.nucc_family):
            raise ValueError(f"{self.nucc.code} is not under nucc_family {self.nucc_family}")
        return self


class Guideline(Strict):
    label: str
    url: str


class OverrideReason(Strict):
    code: str
    display: str
    system: str | None = None
    """A code system alias of the manifest (e.g. HL7's non-adherence reasons); none: ours."""


class PrefetchConfig(Strict):
    """How the service asks an EHR for the record (see `queries.py`)."""

    observation_categories: list[str] = Field(min_length=1)
    medication_intents: list[str] = Field(min_length=1)
    page_size: int = Field(ge=1)
    required_for: str
    """The derived fact (a red flag) whose inputs the EHR must provide: an Observation key whose
    concepts feed it is required."""
    finding_categories: list[str] = []
    """Observation categories where EHRs record findings as Observations (an examination
    finding, a pregnancy status): optional keys, read for every finding concept."""


class ObservedFindings(Strict):
    """How an Observation of a finding says present or absent (its value), and what the
    laboratory's interpretation codes mean."""

    sources: dict[str, Source]
    present: list[Code]
    absent: list[Code]
    flags: dict[Literal["high", "low", "abnormal"], list[Code]]
    """Observation.interpretation codes, by the `flag` a clause tests."""

    @model_validator(mode="after")
    def _sources_exist(self) -> Self:
        codes = [*self.present, *self.absent, *(c for cs in self.flags.values() for c in cs)]
        for code in codes:
            if code.source not in self.sources:
                raise ValueError(f"code {code.code}: source {code.source!r} is not in `sources`")
        return self


class Config(Strict):
    episode_concepts: list[str]
    qualified_episode_concepts: list[str] = []
    """Generic codes that count as back pain only beside an episode concept or at a back site."""
    back_body_site: str | None = None
    """The value set of back body sites (Condition.bodySite) that qualifies a generic code."""
    back_body_site_means: str | None = None
    """The finding a generic code at a back body site is read as (back pain)."""
    thresholds: dict[str, float]
    lookback_days: dict[str, int]
    override_reasons: list[OverrideReason]
    plausible: dict[str, tuple[float, float]] = {}
    """Per observation concept, the range of values (canonical unit) a result can really have."""
    prefetch: PrefetchConfig
    negation_cues: list[str] = []
    """Words that negate a finding named after them in the same clause of a text."""
    negation_after: list[str] = []
    """Words that negate a finding named before them in the same clause ("fracture ruled
    out")."""
    observed_findings: ObservedFindings
    cautions: list[Caution] = []
    """Lines every card adds when their derived fact holds (a population: pregnancy)."""


class CodeSystem(Strict):
    uri: str
    name: str
    read_as: str | None = None
    """Another system of the manifest whose value sets this one's codes are looked up in."""


class Manifest(Strict):
    name: str
    version: str
    title: str
    own_code_system: str
    code_systems: dict[str, CodeSystem]


@dataclass(frozen=True)
class Knowledge:
    """The loaded, cross-checked knowledge base."""

    manifest: Manifest
    config: Config
    specialties: dict[str, Specialty]
    guidelines: dict[str, Guideline]
    value_sets: dict[str, ValueSet]
    rules: dict[str, Rule]
    codes: CodeIndex
    positive_results: dict[str, frozenset[tuple[str, str]]]
    """Per observation concept, the (system URI, code) results that mean positive."""
    name_patterns: dict[str, re.Pattern[str]]
    """Per medicine concept, its ingredient `names` as one whole-word, case-blind pattern."""
    form_patterns: dict[str, re.Pattern[str]]
    """Per medicine concept, its `not_forms` likewise."""
    term_patterns: dict[str, re.Pattern[str]]
    """Per finding concept, its `terms` as one case-blind pattern, each matched at the start of
    a word (`metasta` finds "metastatic")."""
    negation: re.Pattern[str] | None
    """The `negation_cues` as one whole-word, case-blind pattern (None: no cues)."""
    negation_after: re.Pattern[str] | None
    """The `negation_after` cues, likewise."""
    any_term: re.Pattern[str] | None
    """Every finding set's `terms`, lower case, as one case-sensitive pattern (`names_a_term`:
    a case-blind alternation of them costs ~4x as much per text, on every unread entry)."""
    text_risk: str | None
    """The risk concept found in text (`Risk.from_text`), if the knowledge base has one."""
    read: frozenset[str]
    """The concepts the rules' clauses name (risk sets apart)."""
    flagging: frozenset[str]
    """The concepts that feed a rule deriving `config.prefetch.required_for` (a red flag),
    directly or through the facts other rules derive from them."""
    presence: dict[tuple[str, str], bool]
    """An Observation value (system URI, code) that says a finding is present (True) or
    absent (False)."""
    flags: dict[tuple[str, str], str]
    """An interpretation code (system URI, code) -> the `flag` it means."""
    units: dict[str, dict[str, UnitConversion]]
    """Per observation concept, its conversions by `unit_key` of the unit and its aliases."""
    _known: dict[tuple[str | None, str | None], tuple[str, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _of_kind: dict[tuple[str | None, str | None, str], tuple[str, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _conversions: dict[tuple[str, str | None, str | None], tuple[float, float] | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def findings_named(self, text: str) -> list[str]:
        """The finding concepts whose `terms` `text` names, each not negated in its clause (a
        `negation_cues` word before the term: "no cauda equina", "denies fever"; a
        `negation_after` word after it: "fracture ruled out")."""
        if not self.names_a_term(text):
            return []
        found = []
        for clause in re.split(r"[.;,:\n]", text):
            for concept, pattern in self.term_patterns.items():
                match = pattern.search(clause)
                if match and not self._negated(clause, match):
                    found.append(concept)
        return list(dict.fromkeys(found))

    def names_a_term(self, text: str) -> bool:
        """Whether `text` names any finding set's term (before negation is looked at)."""
        return self.any_term is not None and self.any_term.search(text.lower()) is not None

    def _negated(self, clause: str, match: re.Match[str]) -> bool:
        before = self.negation and self.negation.search(clause[: match.start()])
        after = self.negation_after and self.negation_after.search(clause[match.end() :])
        return bool(before or after)

    def medicines_named(self, text: str) -> list[tuple[str, str]]:
        """(concept, name) for each medicine value set whose ingredient or brand `text` names."""
        found = ((concept, p.search(text)) for concept, p in self.name_patterns.items())
        return [(concept, match.group(0).lower()) for concept, match in found if match]

    @property
    def version(self) -> str:
        return self.manifest.version

    def concepts(self, system: str | None, code: str | None) -> tuple[str, ...]:
        """The concepts a (system URI, code) pair belongs to; remembered, as records repeat
        their codes (`_remembered`)."""
        found = self._known.get((system, code))
        if found is None:
            found = _remembered(self._known, (system, code), self.codes.concepts(system, code))
        return found

    def concepts_of(self, system: str | None, code: str | None, fact: str) -> tuple[str, ...]:
        """`concepts` of the value sets of one `fact` kind (remembered likewise)."""
        found = self._of_kind.get((system, code, fact))
        if found is None:
            concepts = self.concepts(system, code)
            found = tuple(c for c in concepts if self.value_sets[c].fact == fact)
            _remembered(self._of_kind, (system, code, fact), found)
        return found

    def conversion(
        self, concept: str, code: str | None, unit: str | None
    ) -> tuple[float, float] | None:
        """(factor, offset) into `concept`'s canonical unit of a Quantity's `code`, else its
        `unit` text, else the unit-less conversion; None when none is known (remembered)."""
        key = (concept, code, unit)
        if key in self._conversions:
            return self._conversions[key]
        units = self.units.get(concept, {})
        spelled = (units.get(unit_key(s or "")) for s in (code, unit, ""))
        known = next((c for c in spelled if c is not None), None)
        found = None if known is None else (known.factor, known.offset)
        return _remembered(self._conversions, key, found)

    def threshold(self, bound: Threshold) -> float:
        return self.config.thresholds[bound] if isinstance(bound, str) else bound

    def system_uri(self, alias: str) -> str:
        return self.manifest.code_systems[alias].uri

    def system_name(self, uri: str | None) -> str:
        """The readable name of a code system URI (the URI itself when unknown)."""
        return self._system_names.get(uri) or uri or "no system"

    @cached_property
    def result_windows(self) -> dict[tuple[str, str], int | None]:
        """Per (system URI, code) of a value set, the days its results count for (`lookback_days`,
        the longest of its concepts'); None when it is also a finding, or another kind of code
        (no window: read whenever it was recorded)."""
        lookback = self.config.lookback_days
        windows: dict[tuple[str, str], int | None] = {}
        for key, concepts in self.codes.exact.items():
            readings = all(self.value_sets[c].fact == "observation" for c in concepts)
            windows[key] = max(lookback[c] for c in concepts) if readings else None
        return windows

    @cached_property
    def shortest_result_window(self) -> int | None:
        """The fewest days any result code's results count for (None: no result codes)."""
        return min(
            (days for days in self.result_windows.values() if days is not None), default=None
        )

    @cached_property
    def _system_names(self) -> dict[str | None, str]:
        systems = reversed(self.manifest.code_systems.values())  # the first of a URI wins
        return {system.uri: system.name for system in systems}


_REMEMBERED = 20_000
"""How many code lookups `Knowledge` keeps of each kind: codes come from requests, so the
memory is bounded (it starts again when full)..."""
_REMEMBERED_CHARS = 128
"""...and so is each lookup: a system and code longer than this together (no real one is) are
looked up every time, never kept."""
K = TypeVar("K", bound=tuple[Any, ...])
V = TypeVar("V")


def _remembered(memo: dict[K, V], key: K, value: V) -> V:
    """`value`, kept in `memo` under `key` (emptied first when it holds `_REMEMBERED`) unless
    the key's text is over `_REMEMBERED_CHARS`."""
    if sum(len(part) for part in key if isinstance(part, str)) > _REMEMBERED_CHARS:
        return value
    if len(memo) >= _REMEMBERED:
        memo.clear()
    memo[key] = value
    return value


_REQUIRED_THRESHOLDS = (
    "new_finding_days",
    "current_medication_days",
    "active_order_max_days",
    "observed_finding_days",
)
"""Thresholds the fact builder reads itself (rules name theirs, and are checked one by one)."""


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when PyYAML has it (its wheels do): the rules load 7x faster."""


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    except (OSError, yaml.YAMLError) as exc:
        raise KnowledgeError(path, f"cannot read YAML: {exc}") from exc


def _parse(model: type[M], path: Path, data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise KnowledgeError(path, problems) from exc


def _parse_map(model: type[M], path: Path) -> dict[str, M]:
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise KnowledgeError(path, "expected a mapping")
    return {key: _parse(model, path, value) for key, value in data.items()}


def _load_dir(model: type[M], folder: Path) -> dict[Path, M]:
    return {path: _parse(model, path, _read_yaml(path)) for path in sorted(folder.glob("*.yaml"))}


def load_knowledge(
    root: Path = DEFAULT_RULES_DIR, hooks: Collection[str] | None = None
) -> Knowledge:
    """Load and cross-check the knowledge base in `root`; with `hooks`, every hook a rule names
    must be one of them."""
    manifest = _parse(Manifest, root / "ruleset.yaml", _read_yaml(root / "ruleset.yaml"))
    config = _parse(Config, root / "config.yaml", _read_yaml(root / "config.yaml"))
    specialties = _parse_map(Specialty, root / "specialties.yaml")
    guidelines = _parse_map(Guideline, root / "guidelines.yaml")
    value_set_files = _load_dir(ValueSet, root / "valuesets")
    rule_files = _load_dir(Rule, root / "rules")

    value_sets: dict[str, ValueSet] = {}
    for alias, listed in manifest.code_systems.items():
        if listed.read_as is not None and listed.read_as not in manifest.code_systems:
            wrong = f"code system {alias!r} is read as {listed.read_as!r}, which is not listed"
            raise KnowledgeError(root / "ruleset.yaml", wrong)
    codes = CodeIndex(
        manifest.code_systems["icd-10-cm"].uri,
        frozenset(s.uri for s in manifest.code_systems.values() if s.read_as == "icd-10-cm"),
    )
    positive_results: dict[str, frozenset[tuple[str, str]]] = {}

    def keyed(path: Path, codes: list[Code]) -> list[tuple[str, str]]:
        for code in codes:
            if code.system not in manifest.code_systems:
                raise KnowledgeError(path, f"unknown code system {code.system!r}")
        return [(manifest.code_systems[c.system].uri, c.code) for c in codes]

    def keyed_config(codes: list[Code]) -> list[tuple[str, str]]:
        return keyed(root / "config.yaml", codes)

    for path, value_set in value_set_files.items():
        if path.stem != value_set.concept:
            raise KnowledgeError(path, f"file name must be the concept name {value_set.concept!r}")
        value_sets[value_set.concept] = value_set
        for (system, code), entry in zip(
            keyed(path, value_set.codes), value_set.codes, strict=True
        ):
            codes.add(system, code, value_set.concept, entry.descendants)
        positive_results[value_set.concept] = frozenset(keyed(path, value_set.positive))

    rules: dict[str, Rule] = {}
    for path, rule in rule_files.items():
        if path.stem != rule.id:
            raise KnowledgeError(path, f"file name must be the rule id {rule.id!r}")
        if rule.id in rules:
            raise KnowledgeError(path, f"duplicate rule id {rule.id!r}")
        rules[rule.id] = rule

    knowledge = Knowledge(
        manifest,
        config,
        specialties,
        guidelines,
        value_sets,
        rules,
        codes,
        positive_results,
        {
            concept: pattern
            for concept, vs in value_sets.items()
            if (pattern := _words([*vs.names, *_brands(vs)])) is not None
        },
        {
            concept: pattern
            for concept, vs in value_sets.items()
            if (pattern := _words(vs.not_forms)) is not None
        },
        {
            concept: pattern
            for concept, vs in value_sets.items()
            if (pattern := _words(vs.terms, whole=False)) is not None
        },
        _words(config.negation_cues),
        _words(config.negation_after),
        _words(
            sorted({term.lower() for vs in value_sets.values() for term in vs.terms}),
            whole=False,
            blind=False,
        ),
        next((c for c, vs in value_sets.items() if vs.risk and vs.risk.from_text), None),
        frozenset(
            c
            for c in measured(concepts_read(rules.values()), value_sets)
            if c in value_sets and not value_sets[c].risk
        ),
        frozenset(
            measured(
                concepts_read(feeding(rules.values(), config.prefetch.required_for)), value_sets
            )
        ),
        _presence(config.observed_findings, keyed_config),
        {
            key: flag
            for flag, codes in config.observed_findings.flags.items()
            for key in keyed_config(codes)
        },
        {
            concept: {
                unit_key(spelling): conversion
                for unit, conversion in vs.units.items()
                for spelling in (unit, *conversion.aliases)
            }
            for concept, vs in value_sets.items()
            if vs.units
        },
    )
    rule_paths = {rule.id: path for path, rule in rule_files.items()}
    _cross_check(knowledge, rule_paths, root)
    _check_measured(knowledge, root)
    for rule in rules.values():
        unknown = sorted(set(rule.hooks) - set(hooks)) if hooks is not None else []
        if unknown:
            raise KnowledgeError(
                rule_paths[rule.id], f"unknown hooks {unknown}: not {list(hooks or [])}"
            )
    return knowledge


def _presence(
    observed: ObservedFindings, keyed: Callable[[list[Code]], list[tuple[str, str]]]
) -> dict[tuple[str, str], bool]:
    return {
        **dict.fromkeys(keyed(observed.present), True),
        **dict.fromkeys(keyed(observed.absent), False),
    }


def measured(concepts: set[str], value_sets: dict[str, ValueSet]) -> set[str]:
    """`concepts` and the observation concepts whose results show one of them (`measured`)."""
    return concepts | {
        route.observation
        for concept in concepts
        if concept in value_sets
        for route in value_sets[concept].measured
    }


def _check_measured(knowledge: Knowledge, root: Path) -> None:
    for concept, value_set in knowledge.value_sets.items():
        path = root / "valuesets" / f"{concept}.yaml"
        for route in value_set.measured:
            observed = knowledge.value_sets.get(route.observation)
            if observed is None or observed.fact != "observation":
                raise KnowledgeError(path, f"{route.observation!r} is not an observation concept")
            if route.guideline not in knowledge.guidelines:
                raise KnowledgeError(path, f"unknown guideline {route.guideline!r}")
            for explains in route.unless:
                found = knowledge.value_sets.get(explains)
                if found is None or found.fact != "finding":
                    raise KnowledgeError(path, f"unless {explains!r} is not a finding concept")
            bounds = [bound for _, bound in route.value.items()] if route.value else []
            for bound in [*bounds, route.fall_percent]:
                if isinstance(bound, str) and bound not in knowledge.config.thresholds:
                    raise KnowledgeError(path, f"unknown threshold {bound!r}")


_BRAND = re.compile(r"\[([A-Z][^\]]+)\]")
"""An RxNorm branded product's brand, as its display gives it: `... Oral Tablet [Percocet]`."""


def _brands(value_set: ValueSet) -> list[str]:
    """The brand names in a medication value set's code displays (its branded products), so
    an uncoded "Percocet 5/325" is matched by name like an uncoded "oxycodone"."""
    if not value_set.names:
        return []
    return sorted({m.group(1) for code in value_set.codes for m in _BRAND.finditer(code.display)})


def _words(cues: list[str], whole: bool = True, blind: bool = True) -> re.Pattern[str] | None:
    """`cues` as one pattern of whole words (or, not `whole`, word starts); case-blind unless
    not `blind` (the caller then lowers the text)."""
    if not cues:
        return None
    end = r"\b" if whole else ""
    flags = re.IGNORECASE if blind else 0
    return re.compile(r"\b(" + "|".join(map(re.escape, cues)) + ")" + end, flags)


def concepts_read(rules: Iterable[Rule]) -> set[str]:
    """The value-set concepts the clauses of `rules` name."""
    return {
        getattr(clause, clause.kind)
        for rule in rules
        for alternative in rule.match
        for clause in alternative
        if clause.kind in _VALUE_SET_KINDS
    }


def feeding(rules: Iterable[Rule], derived: str) -> list[Rule]:
    """The rules that derive `derived`, and those whose derived facts they read, transitively."""
    rules = list(rules)
    wanted, found, feeding = {derived}, True, []
    while found:
        found = False
        for rule in rules:
            if rule not in feeding and wanted & set(rule.derive):
                feeding.append(rule)
                wanted |= {
                    clause.derived
                    for alternative in rule.match
                    for clause in alternative
                    if clause.derived is not None
                }
                found = True
    return feeding


_VALUE_SET_KINDS = ("finding", "observation", "order", "treatment", "medication")


def _cross_check(knowledge: Knowledge, rule_paths: dict[str, Path], root: Path) -> None:
    config_path = root / "config.yaml"
    config = knowledge.config
    named = [*config.episode_concepts, *config.qualified_episode_concepts]
    sited = [c for c in (config.back_body_site, config.back_body_site_means) if c]
    for concept in [*named, *sited]:
        if concept not in knowledge.value_sets:
            raise KnowledgeError(config_path, f"concept {concept!r} has no value set")
    for threshold in _REQUIRED_THRESHOLDS:
        if threshold not in config.thresholds:
            raise KnowledgeError(config_path, f"threshold {threshold!r} is missing")
    for reason in config.override_reasons:
        if reason.system is not None and reason.system not in knowledge.manifest.code_systems:
            raise KnowledgeError(config_path, f"override reason {reason.code!r}: unknown system")
    for concept in [*knowledge.config.lookback_days, *knowledge.config.plausible]:
        if concept not in knowledge.value_sets:
            raise KnowledgeError(config_path, f"lookback or range for unknown concept {concept!r}")
    categories = config.prefetch.observation_categories
    for concept, value_set in knowledge.value_sets.items():
        if value_set.fact == "observation" and concept not in knowledge.config.lookback_days:
            raise KnowledgeError(config_path, f"observation concept {concept!r} has no lookback")
        if value_set.category is not None and value_set.category not in categories:
            wrong = f"{concept!r}: category {value_set.category!r} is not one of {categories}"
            raise KnowledgeError(config_path, wrong)
    for concept, value_set in knowledge.value_sets.items():
        if value_set.risk and value_set.risk.guideline not in knowledge.guidelines:
            wrong = f"{concept!r}: unknown guideline {value_set.risk.guideline!r}"
            raise KnowledgeError(root / "valuesets" / f"{concept}.yaml", wrong)
        if value_set.risk and concept not in concepts_read(knowledge.rules.values()):
            wrong = f"risk {concept!r} is read by no rule: its entries would go unnamed"
            raise KnowledgeError(root / "valuesets" / f"{concept}.yaml", wrong)
    derivable = {name for rule in knowledge.rules.values() for name in rule.derive}
    for caution in config.cautions:
        if caution.if_ not in derivable:
            raise KnowledgeError(config_path, f"caution {caution.if_!r}: no rule derives it")
    if config.prefetch.required_for not in derivable:
        wrong = f"prefetch.required_for {config.prefetch.required_for!r}: no rule derives it"
        raise KnowledgeError(config_path, wrong)
    for rule in knowledge.rules.values():
        problem = _rule_problem(knowledge, rule, derivable)
        if problem:
            raise KnowledgeError(rule_paths[rule.id], problem)


def _rule_problem(knowledge: Knowledge, rule: Rule, derivable: set[str]) -> str | None:
    if rule.guideline not in knowledge.guidelines:
        return f"unknown guideline {rule.guideline!r}"
    for referral in rule.card.referrals if rule.card else ():
        if referral.specialty not in knowledge.specialties:
            return f"unknown specialty {referral.specialty!r}"
    cautions = [caution.if_ for caution in rule.card.cautions] if rule.card else []
    for name in [*rule.unless, *cautions]:
        if name not in derivable:
            return f"`unless` or `cautions` names {name!r}, which no rule derives"
    for clause in (clause for alternative in rule.match for clause in alternative):
        problem = _clause_problem(knowledge, clause, derivable)
        if problem:
            return problem
    return None


def _clause_problem(knowledge: Knowledge, clause: Clause, derivable: set[str]) -> str | None:
    kind = clause.kind
    if kind == "derived":
        return None if clause.derived in derivable else f"no rule derives {clause.derived!r}"
    if kind in _VALUE_SET_KINDS:
        concept = getattr(clause, kind)
        value_set = knowledge.value_sets.get(concept)
        if value_set is None:
            return f"unknown concept {concept!r}"
        if value_set.fact != kind:
            return f"{concept!r} is a {value_set.fact} concept, not a {kind}"
        if clause.positive is not None and not value_set.positive:
            return f"{concept!r} has no `positive` codes for a `positive` clause"
    comparisons = (
        clause.value,
        clause.weeks,
        clause.span_weeks,
        clause.last_days,
        clause.course_weeks,
        clause.sessions,
        clause.episode_weeks,
        clause.onset_age,
        clause.age,
    )
    for comparison in comparisons:
        for _, bound in comparison.items() if comparison else ():
            if isinstance(bound, str) and bound not in knowledge.config.thresholds:
                return f"unknown threshold {bound!r}"
    return None
