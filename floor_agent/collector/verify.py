"""Re-verify every stored chain against its last signed checkpoint (`collector verify`).

Ingest verifies each batch as it arrives; this proves later that nothing in the store was
altered, removed or inserted since: the auditor's question, answered from the data alone, with
one thing from outside it: the anchor public key (collector/anchor.py). Without it the check
would trust the agent keys stored in the very file it checks, and a key replaced there together
with a re-signed checkpoint would verify. So, per enrolled agent:

- the agent's key must carry the anchor's endorsement (`unendorsed` in a store from before the
  anchor, `endorsement` when it does not verify: the key was replaced);
- the rows up to the signed checkpoint must chain to it (chain.verify);
- every stored row of the agent is read, not only those up to its head: rows past the signed
  checkpoint are `unsigned`, rows past the stored head too are `inserted` (ingest only ever
  raises the head to a signed checkpoint's seq);

and rows naming an agent id that never enrolled are `orphan` rows. Each finding names the agent
and the seqs. The result can be stored (put_verification) for the dashboard and the API.

Deleting an agent's newest rows together with its checkpoint (an older checkpoint put back)
leaves a chain that verifies. So each verification on the collector host seals the heads it
verified into a file beside the anchor key (anchor.SEAL_FILE, signed by the anchor, heads only
moving forward); the next one reports a head below its seal as `rollback`, and a sealed agent
gone from the store. This is RFC 5848's signature block and journald's seal in spirit: the
verifier keeps a signed high-water mark outside the store, so truncation shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from floor_agent.audit import chain
from floor_agent.audit.keys import KeyFileError, public_key_from_b64
from floor_agent.collector import anchor as trust
from floor_agent.protocol.checkpoint import GENESIS_HASH, Checkpoint
from floor_agent.protocol.event import AuditEvent, canonical
from floor_agent.store.interface import Store
from floor_agent.store.records import AgentRecord

PAGE = 10_000
UNCHECKED = "unchecked"  # no anchor key was given: the endorsement was not looked at
KEY_PROBLEMS: tuple[chain.ProblemKind, ...] = ("unendorsed", "endorsement")


@dataclass
class AgentVerification:
    agent_id: str
    checkpoint_seq: int | None
    stored_events: int
    report: chain.Report
    endorsement: str = UNCHECKED  # anchor.VALID | MISSING | INVALID | UNCHECKED
    head: dict[str, object] | None = None  # head_seq, head_hash (hex) when it verified

    @property
    def ok(self) -> bool:
        return self.report.ok

    def problem_lines(self) -> list[str]:
        return [f"{self.agent_id}: {p.kind}" + (f" at seq {p.seq}" if p.seq is not None else "")
                + f": {p.detail}" for p in self.report.problems]


@dataclass(frozen=True)
class Orphan:
    """Event rows under an agent id that never enrolled: nobody's key covers them."""

    agent_id: str
    first_seq: int
    last_seq: int
    rows: int

    def line(self) -> str:
        return (f"{self.agent_id}: orphan rows at seq {self.first_seq}..{self.last_seq} "
                f"({self.rows} rows): no enrolled agent has this id, nothing signs them")


@dataclass
class StoreVerification:
    agents: list[AgentVerification] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)
    anchor_id: str | None = None  # the anchor key the endorsements were checked against
    findings: list[str] = field(default_factory=list)  # store-wide: seal, vanished agents

    @property
    def ok(self) -> bool:
        return not self.orphans and not self.findings and all(a.ok for a in self.agents)

    def problem_lines(self) -> list[str]:
        return [line for a in self.agents for line in a.problem_lines()] + \
            [o.line() for o in self.orphans] + self.findings

    def verified_heads(self) -> dict[str, dict[str, object]]:
        """What a seal may vouch for: the heads of the agents that verified."""
        return {a.agent_id: a.head for a in self.agents if a.ok and a.head is not None}


# --------------------------------------------------------------------------- pure

def seq_runs(seqs: Iterable[int]) -> list[tuple[int, int, int]]:
    """Sorted seqs as (first, last, count) of consecutive runs: 'seq 5..9 (5 rows)'."""
    runs: list[tuple[int, int, int]] = []
    for seq in sorted(seqs):
        if runs and seq == runs[-1][1] + 1:
            first, _, count = runs[-1]
            runs[-1] = (first, seq, count + 1)
        else:
            runs.append((seq, seq, 1))
    return runs


def _span(first: int, last: int, count: int) -> str:
    return f"seq {first}" if first == last else f"seq {first}..{last} ({count} rows)"


def beyond_head(seqs: Sequence[int], checkpoint_seq: int | None, head_seq: int
                ) -> list[chain.Problem]:
    """Rows no signature in the store covers: below seq 1, past the signed checkpoint, and
    past the stored head as well. Ingest raises the head only to a signed checkpoint's seq, so
    a row past both was never acknowledged by the agent: it was put there."""
    signed = checkpoint_seq or 0
    top = max(signed, head_seq)
    problems = [chain.Problem("inserted", first, f"{_span(first, last, n)} below seq 1: "
                                                 f"no chain has such rows")
                for first, last, n in seq_runs(s for s in seqs if s < 1)]
    problems += [chain.Problem("unsigned", first,
                               f"{_span(first, last, n)} past the last signed checkpoint "
                               f"(seq {signed}), up to the stored head (seq {head_seq}): no "
                               f"signature in the store covers them (the agent rolled back, "
                               f"or they were inserted with a raised head)")
                 for first, last, n in seq_runs(s for s in seqs if signed < s <= top)]
    problems += [chain.Problem("inserted", first,
                               f"{_span(first, last, n)} past the signed head (seq {signed}) "
                               f"and the stored head (seq {head_seq}): never acknowledged by "
                               f"the agent, inserted")
                 for first, last, n in seq_runs(s for s in seqs if s > top)]
    return problems


def rollback_problems(sealed: dict[str, dict[str, object]], sealed_at: str,
                      live_heads: dict[str, int], hash_at_sealed: dict[str, bytes | None]
                      ) -> tuple[dict[str, chain.Problem], list[str]]:
    """Heads below the seal, and sealed agents gone: (problem per agent, store findings).

    `live_heads`: agent -> stored head seq; `hash_at_sealed`: agent -> the stored hash at the
    sealed seq (None when no row is there)."""
    per_agent: dict[str, chain.Problem] = {}
    gone: list[str] = []
    for agent, head in sorted(sealed.items()):
        seq, digest = int(str(head["head_seq"])), str(head["head_hash"])
        if agent not in live_heads:
            gone.append(f"{agent}: sealed at seq {seq} on {sealed_at}, now gone from the store "
                        f"(agent and its rows deleted)")
        elif live_heads[agent] < seq or hash_at_sealed.get(agent) is None:
            per_agent[agent] = chain.Problem(
                "rollback", seq, f"the anchor sealed head seq {seq} on {sealed_at}; the store "
                                 f"holds head seq {live_heads[agent]}: its newest rows were "
                                 f"deleted together with their checkpoint")
        elif (found := hash_at_sealed[agent]) is not None and found.hex() != digest:
            per_agent[agent] = chain.Problem(
                "rollback", seq, f"the row at the sealed head seq {seq} differs from the one "
                                 f"sealed on {sealed_at}: the history was rewritten")
    return per_agent, gone


def endorsement_problem(status: str, key_id: str) -> chain.Problem | None:
    if status == trust.MISSING:
        return chain.Problem("unendorsed", None,
                             "public key carries no endorsement by the collector's anchor (a "
                             "store from before the anchor: verify the chains, then run "
                             "'floor-agent collector anchor endorse-existing' once)")
    if status == trust.INVALID:
        return chain.Problem("endorsement", None,
                             f"public key is not the one anchor {key_id} endorsed: the key "
                             f"was replaced in the store, or the store belongs to another "
                             f"collector")
    return None


# --------------------------------------------------------------------------- store readers

def _rows(store: Store, agent_id: str, low: int, high: int
          ) -> tuple[list[AuditEvent], list[bytes]]:
    events: list[AuditEvent] = []
    hashes: list[bytes] = []
    start = low
    while start <= high:
        for row, digest in store.chain_events(agent_id, start, min(high, start + PAGE - 1)):
            events.append(AuditEvent(row["agent_id"], row["seq"], row["boot_id"], row["ts"],
                                     row["kind"], row["severity"], row["subject"], row["data"]))
            hashes.append(digest)
        start += PAGE
    return events, hashes


@dataclass
class StoredAgent:
    """Everything the verdict on one agent needs, as read from the store."""

    record: AgentRecord
    identity: dict[str, Any]
    checkpoint: Checkpoint | None
    events: list[AuditEvent]
    hashes: list[bytes]


def read_agent(store: Store, agent_id: str) -> StoredAgent:
    """Every stored row of the agent, whatever its head says. Rows committed while this reads
    arrive with a newer signed checkpoint: they are left for the next run, not called
    inserted. KeyError for an agent that is not enrolled."""
    record = store.get_agent(agent_id)
    identity = store.agent_identity(agent_id)
    if record is None or identity is None:
        raise KeyError(agent_id)
    checkpoint = store.checkpoint_of(agent_id)
    extent = store.event_extent(agent_id)
    events, hashes = _rows(store, agent_id, min(1, extent[0]), extent[1]) if extent else ([], [])
    upto = max(record.head_seq, checkpoint.seq if checkpoint else 0)
    fresh = store.checkpoint_of(agent_id)
    key = _key(record.public_key)
    if extent and extent[1] > upto and fresh is not None and fresh.seq > upto and \
            key is not None and fresh.signature_valid(key):
        keep = [i for i, e in enumerate(events) if not upto < e.seq <= fresh.seq]
        events, hashes = [events[i] for i in keep], [hashes[i] for i in keep]
    return StoredAgent(record, identity, checkpoint, events, hashes)


def _key(text: str) -> Ed25519PublicKey | None:
    try:
        return public_key_from_b64(text)
    except KeyFileError:
        return None


def judge_agent(stored: StoredAgent, anchor: Ed25519PublicKey | None = None
                ) -> AgentVerification:
    """The verdict on one agent's rows and key (pure): the chain up to the signed checkpoint,
    rows past it and past the head, and the key's endorsement when the anchor key is given."""
    record, checkpoint = stored.record, stored.checkpoint
    stray = beyond_head([e.seq for e in stored.events], checkpoint.seq if checkpoint else None,
                        record.head_seq)
    valid = [i for i, e in enumerate(stored.events) if e.seq >= 1]
    chained = [stored.events[i] for i in valid]
    hashes = [stored.hashes[i] for i in valid]
    limit = checkpoint.seq if checkpoint else record.head_seq
    anchored = [e for e in chained if e.seq <= limit]  # rows are in seq order: a prefix
    report = chain.verify(anchored, checkpoint, _key(record.public_key), GENESIS_HASH,
                          hashes[:len(anchored)])
    if anchored and anchored[0].seq != 1:
        report.problems.insert(0, chain.Problem("gap", 1, f"events 1..{anchored[0].seq - 1} "
                                                          f"are missing from the store"))
    if checkpoint is not None and checkpoint.seq > 0 and not anchored:
        report.problems.append(chain.Problem("gap", 1, "no stored events under the checkpoint"))
    # Rows past the checkpoint cannot be anchored, but must still link up (their seqs are
    # judged by beyond_head above, so only the walk's hash breaks count here).
    prev = hashes[len(anchored) - 1] if anchored else GENESIS_HASH
    unanchored = chained[len(anchored):]
    run = chain.walk(prev, [e.seq for e in unanchored], [canonical(e) for e in unanchored],
                     hashes[len(anchored):])
    report.problems += [chain.Problem("altered", found.seq, "unanchored event does not link")
                        for found in run.breaks if found.expected is None]
    report.problems += stray
    status = UNCHECKED
    if anchor is not None:
        status = trust.check_endorsement(anchor, stored.identity)
        problem = endorsement_problem(status, trust.key_id(anchor))
        if problem is not None:
            report.problems.insert(0, problem)
    if report.problems:
        report.verified = 0
    head = None
    if report.ok and checkpoint is not None and anchored:
        head = {"head_seq": checkpoint.seq, "head_hash": hashes[len(anchored) - 1].hex()}
    return AgentVerification(record.agent_id, checkpoint.seq if checkpoint else None,
                             len(stored.events), report, status, head)


def verify_agent(store: Store, agent_id: str, anchor: Ed25519PublicKey | None = None
                 ) -> AgentVerification:
    """One agent's chain, every stored row of it, and (given the anchor key) its key."""
    return judge_agent(read_agent(store, agent_id), anchor)


def verify_all(store: Store, anchor: Ed25519PublicKey | None = None
               ) -> list[AgentVerification]:
    return [verify_agent(store, item["agent_id"], anchor) for item in store.list_agents()]


def find_orphans(store: Store) -> list[Orphan]:
    return [Orphan(*row) for row in store.orphan_events()]


def verify_store(store: Store, anchor: Ed25519PublicKey | None = None,
                 seal: dict[str, object] | None = None) -> StoreVerification:
    """Every enrolled agent, the rows of agents that never enrolled, and (given the seal as
    read from beside the anchor key) heads that went back below it."""
    result = StoreVerification(verify_all(store, anchor), find_orphans(store),
                               trust.key_id(anchor) if anchor is not None else None)
    if seal is not None and anchor is not None:
        apply_seal(store, result, anchor, seal)
    return result


def apply_seal(store: Store, result: StoreVerification, anchor: Ed25519PublicKey,
               seal: dict[str, object]) -> None:
    status, words = trust.check_manifest(anchor, seal, trust.SEAL_DOMAIN, "head seal")
    if status != trust.VALID:
        result.findings.append(f"{trust.SEAL_FILE}: {words}")
        return
    sealed = seal.get("heads")
    assert isinstance(sealed, dict)
    live = {item["agent_id"]: int(item["head_seq"]) for item in store.list_agents()}
    at: dict[str, bytes | None] = {}
    for agent, head in sealed.items():
        seq = int(head["head_seq"])
        rows = store.chain_events(agent, seq, seq) if agent in live else []
        at[agent] = rows[0][1] if rows else None
    per_agent, gone = rollback_problems(sealed, str(seal.get("sealed_at")), live, at)
    for item in result.agents:
        if item.agent_id in per_agent:
            item.report.problems.append(per_agent[item.agent_id])
            item.report.verified = 0
            item.head = None
    result.findings += gone


def record(store: Store, result: StoreVerification, by: str, now: str) -> None:
    """Keep the outcome per agent id (orphans too) for the integrity page and chain_state."""
    for item in result.agents:
        store.put_verification(item.agent_id, item.ok, item.checkpoint_seq, item.stored_events,
                               [line.split(": ", 1)[1] for line in item.problem_lines()], by,
                               now)
    for orphan in result.orphans:
        store.put_verification(orphan.agent_id, False, None, orphan.rows,
                               [orphan.line().split(": ", 1)[1]], by, now)


# --------------------------------------------------------------------------- the upgrade step

@dataclass
class Endorsing:
    """What `collector anchor endorse-existing` did, or why it refused to."""

    endorsed: list[dict[str, str]] = field(default_factory=list)  # agent_id, role, public_key
    refused: list[str] = field(default_factory=list)


def blocks_endorsing(item: AgentVerification) -> list[str]:
    """Findings that forbid endorsing anything: every chain must verify first. An agent that
    never reported has no chain; its missing checkpoint is not a finding (pure)."""
    quiet = item.stored_events == 0 and item.checkpoint_seq is None
    return [line for problem, line in zip(item.report.problems, item.problem_lines(),
                                          strict=True)
            if problem.kind != "unendorsed" and not (quiet and problem.kind == "checkpoint")]


def endorse_existing(store: Store, signer: trust.Anchor, trusted: Ed25519PublicKey
                     ) -> Endorsing:
    """The one-time upgrade of a store from before the anchor: verify every chain, and only if
    all verify (no orphans, no key with a bad endorsement), endorse each key that has none.

    This is trust on first use: it vouches for the keys the store holds now. A key already
    endorsed, or endorsed wrongly, is never signed over."""
    if trust.key_id(signer.key) != trust.key_id(trusted):
        return Endorsing(refused=[f"anchor key {signer.key_id} ({signer.path}) is not the "
                                  f"trusted anchor {trust.key_id(trusted)}"])
    result = verify_store(store, trusted)
    refused = [line for item in result.agents for line in blocks_endorsing(item)]
    refused += [o.line() for o in result.orphans]
    if refused:
        return Endorsing(refused=refused)
    out = Endorsing()
    for item in result.agents:
        if item.endorsement != trust.MISSING:
            continue
        identity = store.agent_identity(item.agent_id)
        assert identity is not None
        store.set_endorsement(item.agent_id, signer.endorse(
            identity["agent_id"], identity["role"], identity["public_key"],
            identity["enrolled_at"]))
        out.endorsed.append({k: identity[k] for k in ("agent_id", "role", "public_key")})
    return out
