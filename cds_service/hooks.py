"""The hooks this service answers: each declared once, with its context model and its service.

Discovery, routing, the OpenAPI document, the playground and the rule files all derive from the
registry (the prefetch comes from the rules: `queries.py`): adding a hook is one `Hook` entry
here, plus the rules that name it and their examples (see docs/architecture.md).
"""

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from cds_service.models import (
    OrderSelectContext,
    OrderSignContext,
    PatientViewContext,
)


@dataclass(frozen=True)
class Hook:
    """A CDS Hooks hook and the service (same id) that answers it."""

    id: str
    context: type[PatientViewContext]
    """The pydantic model of the hook's context (400 naming the path when it does not fit)."""
    title: str
    description: str
    labelled: frozenset[str] = frozenset()
    """Other `hook` values a call to this service may carry and still be answered as this hook
    (the service's URL decides): a known client bug, tolerated on purpose and logged."""


class HookRegistry(Mapping[str, Hook]):
    """Hooks by id, in the order discovery lists them."""

    def __init__(self, hooks: Iterable[Hook]) -> None:
        self._hooks = {hook.id: hook for hook in hooks}

    def __getitem__(self, hook_id: str) -> Hook:
        return self._hooks[hook_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._hooks)

    def __len__(self) -> int:
        return len(self._hooks)

    def with_hook(self, hook: Hook) -> "HookRegistry":
        """This registry plus `hook`."""
        return HookRegistry([*self._hooks.values(), hook])


HOOKS = HookRegistry(
    [
        Hook(
            id="patient-view",
            context=PatientViewContext,
            title="Back pain triage on chart open",
            description=(
                "Escalates back-pain red flags and suggests the right specialist referral, as a "
                "draft FHIR ServiceRequest, when the patient's chart is opened."
            ),
        ),
        Hook(
            id="order-select",
            context=OrderSelectContext,
            title="Back pain triage while ordering",
            description=(
                "Checks lumbar imaging and spine referral orders as they are selected against "
                "the back-pain guidelines, escalates red flags and suggests the fitting referral."
            ),
        ),
        Hook(
            id="order-sign",
            context=OrderSignContext,
            title="Back pain triage before signing",
            description=(
                "Checks the draft orders being signed against the back-pain guidelines: "
                "inappropriate early imaging, red flags that need escalation, and the fitting "
                "referral."
            ),
            # The CDS Hooks sandbox's PAMA tab sends its order-sign call with the hook of its
            # screen, `order-select` (sandbox src/retrieve-data-helpers/service-exchange.js takes
            # `hook` from the current screen, not the trigger). Answered as order-sign: every
            # draft order is judged, `selections` is ignored.
            labelled=frozenset({"order-select"}),
        ),
    ]
)
