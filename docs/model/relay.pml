/*
 * The relay protocol of outboxkit, as checked by Spin (docs/adr/0012).
 *
 *   spin -a docs/model/relay.pml && gcc -O1 -DSAFETY -DCOLLAPSE -o pan pan.c && ./pan -m20000
 *   (fault budgets: -DMAXCRASH= -DMAXEXPIRE= -DMAXLOSS= -DMAXLOSTREPLY= -DMAXREJECT=, -DN=3;
 *   the defaults are the long check, minutes and ~1 GiB; tests/model/test_spin_models.py
 *   runs smaller bounded configurations in seconds)
 *
 * One relay partition, one key, N rows committed in id order by one writer;
 * R relay processes, each a loop of the real relay's steps
 * (relay/_relay.py): refresh the lease (relay/_leases.py), advance the fence
 * after a takeover, claim the oldest pending rows (relay/_store.py
 * claim_batch), publish them with the lease epoch as fence and the expected
 * broker incarnation in one atomic script (the Lua script of
 * outbox/brokers/redis_streams_publish.py), mark them in one transaction
 * (complete(), only under the incarnation recorded in the database).
 *
 * Faults, each bounded so the state space stays finite: a lease expiring at
 * any instant (a frozen relay: every delay between two steps is a freeze and
 * a thaw), a relay crashing at any step (its restart is a new owner id and
 * waits for the old lease to expire), a broker reply lost after the script
 * ran, and the broker losing all its data (streams, fences, incarnation key),
 * after which the relays must re-publish the replay window.
 *
 * A consumer reads the stream in order; what it has seen survives the broker's
 * data loss (it is applied downstream), its read position does not.
 *
 * Properties (assertions; Spin also checks every end state):
 *   P1 no committed row lost: when nothing can move any more, every
 *      committed row was delivered to the consumer (Monitor);
 *   P2 per-key order of first deliveries: a row is delivered for the first
 *      time only after every earlier row of its key (Consumer);
 *   P3 a fenced relay's batch never lands: a batch is appended only under an
 *      epoch at least as new as every epoch the broker accepted before,
 *      across data losses too (publish, ghost variable newest_accepted).
 *
 * Variants, by -D at `spin -a` time:
 *   -DNO_FENCE_CHECK  the seeded bug: the script does not compare fences;
 *                     Spin must find a counter-example (P3, and P2).
 *   -DSTALE_ADOPT     the relay before issue 17: a relay frozen between an
 *                     INCARNATION reply and recording it rolls the record
 *                     back; every relay's marks then fail and it re-publishes
 *                     the same rows without end (LOGMAX overflows).
 *   -DNO_IDLE_PROBE   the relay before issue 17: an idle relay never asks
 *                     the broker for its incarnation, so entries lost while
 *                     nothing new is written are never re-published (P1).
 */

#ifndef N
#define N 2            /* rows of one key, committed in id order; -DN=3 for the long check */
#endif
#if N == 2
#define ANY_PENDING (pending[0] || pending[1])
#else
#define ANY_PENDING (pending[0] || pending[1] || pending[2])
#endif
#define R 2            /* relay processes */
#define B 2            /* claim limit (batch size) */
#define LOGMAX 12      /* broker stream capacity (asserted, never silently full) */
#ifndef MAXCRASH
#define MAXCRASH 1  /* relay crashes in a run */
#endif
#ifndef MAXEXPIRE
#define MAXEXPIRE 1
#endif
/* MAXEXPIRE: expiries of a live owner's lease (freezes past the TTL); -DMAXEXPIRE=2 for the long check */
#ifndef MAXLOSS
#define MAXLOSS 1  /* broker data losses */
#endif
#ifndef MAXLOSTREPLY
#define MAXLOSTREPLY 1  /* replies lost after the script ran */
#endif
#ifndef MAXREJECT
#define MAXREJECT 0  /* entries the broker refuses for themselves (WRONGTYPE: backoff, the key waits) */
#endif
#define NONE 255

/* ---- the database ---- */
byte committed = 0;   /* rows 0 .. committed-1 are committed */
bool pending[N];      /* committed, published_at IS NULL */
bool kept[N];         /* published_at set, kept for the replay window */
bool parked[N];       /* rejected, next_attempt_at in the future: later rows of the key wait */
byte owner = NONE;    /* relay_lease.owner */
byte epoch = 0;       /* relay_lease.epoch */
bool expired = false; /* relay_lease.expires_at < now */
byte db_token = 0;    /* outboxkit_relay_state: the broker incarnation (0: none yet) */

/* ---- the broker ---- */
byte inc_key = 0;     /* <prefix>outboxkit:incarnation (0: absent) */
byte next_token = 1;  /* the script's fresh random token, as a counter */
byte fence = 0;       /* <prefix>outboxkit:fence:<name> (0: absent) */
byte stream[LOGMAX];
byte stream_len = 0;

/* ---- ghosts (not in the implementation: what the properties talk about) ---- */
byte newest_accepted = 0; /* newest epoch the broker accepted, survives data loss */
bool delivered[N];        /* first deliveries seen by the consumer */
byte read_pos = 0;        /* the consumer's position in the current stream */
byte alive_id[R];         /* owner id of each relay's running process */

/* ---- fault budgets ---- */
byte crashes = 0;
byte expiries = 0;
byte losses = 0;
byte lost_replies = 0;
byte rejects = 0;

inline claim_oldest() {
    /* claim_batch: the oldest due rows, in id order, up to the limit */
    bn = 0;
    r = 0;
    do
    :: r < N && bn < B ->
        if
        :: pending[r] && parked[r] -> break /* the key waits for its row in backoff */
        :: pending[r] && !parked[r] -> batch[bn] = r; bn++
        :: else -> skip
        fi;
        r++
    :: else -> break
    od
}

inline adopt_incarnation(token) {
    /* IncarnationTracker.changed: record the new token and replay the window
       in one transaction (the window is assumed to cover every kept row).
       Only a compare-and-set from the token this relay published under: a
       reply that went stale while the relay was frozen must not roll the
       record back to a token the broker no longer has (found by this model,
       issue 17; -DSTALE_ADOPT restores the old behaviour). */
    if
#ifdef STALE_ADOPT
    :: db_token != token ->
#else
    :: db_token != token && db_token == my_token ->
#endif
        db_token = token;
        r = 0;
        do
        :: r < N -> if :: kept[r] -> kept[r] = false; pending[r] = true :: else -> skip fi; r++
        :: else -> break
        od;
        my_token = token
    :: db_token == token -> my_token = token
    :: else -> my_token = db_token /* another relay recorded a newer one: publish again to learn */
    fi
}

proctype Writer() {
    do
    :: committed < N -> atomic { pending[committed] = true; committed++ }
    :: else -> break
    od
}

#define CLEAR_BATCH batch[0] = 0; batch[1] = 0; bn = 0

proctype Relay(byte i) {
    byte me = i;          /* LeaseManager.relay_id: one per process */
    byte my_epoch = 0;
    bool holds = false;   /* the LeaseView is valid */
    bool fences_pending = false;
    byte my_token;        /* IncarnationTracker.expected(), cached */
    byte batch[B];
    byte bn = 0;
    byte r = 0;           /* loop index, always reset to 0 after use */
    byte reply = 0;       /* 0 ok, 1 incarnation, 2 fenced */
    byte seen = 0;        /* the token in an incarnation reply */
    byte rej = NONE;      /* position of the entry the broker refused in the batch */

start:
    skip;
    d_step { alive_id[i] = me; my_token = db_token; holds = false; fences_pending = false; my_epoch = 0 }
end_loop:
    do
    :: /* housekeeping: renew, or take a free or expired lease (epoch + 1 on takeover) */
       d_step {
           !(holds && owner == me && !expired) && (owner == me || owner == NONE || expired) ->
           if
           :: owner != me -> epoch++; fences_pending = true
           :: else -> skip
           fi;
           owner = me; expired = false; my_epoch = epoch; holds = true
       }
    :: /* a takeover advances the fence at once: publish([], fences) */
       holds && (fences_pending
#ifndef NO_IDLE_PROBE
                 /* issue 17: housekeeping probes the broker while idle too; a
                    probe that would change nothing is a stutter, left out */
                 || inc_key != my_token || fence < my_epoch
#endif
                ) ->
       goto publish
    :: /* claim, only under a valid lease (local validity implies the database lease) */
       d_step {
           holds && owner == me && !expired && ANY_PENDING ->
           claim_oldest();
           r = 0
       }
       if
       :: bn > 0 -> goto publish
       :: else -> skip
       fi
    :: crashes < MAXCRASH -> goto crash
    od;

publish:
    if
    :: crashes < MAXCRASH -> goto crash /* relay.after_claim */
    :: true
    fi;
    atomic {
        /* the publish script: incarnation first, then fences, then the appends */
        if
        :: inc_key == 0 -> inc_key = next_token; next_token++
        :: else -> skip
        fi;
        if
        :: inc_key != my_token -> reply = 1; seen = inc_key
        :: else ->
            if
#ifndef NO_FENCE_CHECK
            :: fence > my_epoch -> reply = 2
#endif
            :: else ->
                /* P3: nothing lands under an epoch older than one accepted before */
#ifndef NO_P3
                assert(bn == 0 || my_epoch >= newest_accepted);
#endif
                fence = my_epoch;
                if :: my_epoch > newest_accepted -> newest_accepted = my_epoch :: else -> skip fi;
                r = 0;
                do
                :: r < bn && rejects < MAXREJECT && rej == NONE ->
                    /* XADD refused for this entry (pcall): later entries of its key are skipped */
                    rejects++; rej = r; break
                :: r < bn -> assert(stream_len < LOGMAX); stream[stream_len] = batch[r]; stream_len++; r++
                :: else -> break
                od;
                r = 0;
                reply = 0
            fi
        fi
    }
    if
    :: crashes < MAXCRASH -> goto crash /* relay.after_publish */
    :: lost_replies < MAXLOSTREPLY ->   /* the reply is lost: BrokerError, back off, claim again */
       d_step { lost_replies++; CLEAR_BATCH; reply = 0; seen = 0; rej = NONE }
       goto end_loop
    :: true
    fi;
    if
    :: reply == 1 -> d_step { adopt_incarnation(seen); r = 0; CLEAR_BATCH; reply = 0; seen = 0; rej = NONE }
    :: reply == 2 -> d_step { holds = false; CLEAR_BATCH; reply = 0; rej = NONE } /* relay.fenced: renew first */
    :: reply == 0 && bn == 0 -> fences_pending = false
    :: reply == 0 && bn > 0 ->
       fences_pending = false;
       if
       :: crashes < MAXCRASH -> goto crash /* relay.after_mark: the transaction never commits */
       :: true
       fi;
       /* mark: complete() in one transaction, only under the recorded incarnation */
       d_step {
           if
           :: db_token == my_token ->
               r = 0;
               do
               :: r < bn && r == rej -> break /* the refused entry and the rest of its key are not marked */
               :: r < bn && r != rej -> if :: pending[batch[r]] -> pending[batch[r]] = false; kept[batch[r]] = true :: else -> skip fi; r++
               :: else -> break
               od;
               r = 0
           :: else -> skip
           fi;
           /* record_failures (not under the incarnation condition): attempts + 1, backoff */
           if :: rej != NONE -> parked[batch[rej]] = true :: else -> skip fi;
           CLEAR_BATCH; rej = NONE
       }
    fi;
    goto end_loop;

crash:
    skip;
    /* SIGKILL: local state is gone; the restart is another owner (uuid suffix) */
    d_step { crashes++; me = me + R; alive_id[i] = me; CLEAR_BATCH; reply = 0; seen = 0; r = 0; rej = NONE }
    goto start
}

inline read_one() {
    /* the consumer reads the next entry of the stream */
    r = stream[read_pos];
    if
    :: !delivered[r] ->
        /* P2: first deliveries in id (= write) order */
        assert(r == 0 || delivered[r - 1]);
        delivered[r] = true
    :: else -> skip /* a duplicate: the inbox absorbs it */
    fi;
    read_pos++;
    r = 0
}

proctype Faults() {
    byte r = 0;
end_faults:
    do
    :: atomic { owner != NONE && !expired && expiries < MAXEXPIRE -> expired = true; expiries++ }
    :: d_step { parked[0] -> parked[0] = false } /* the backoff ran out */
    :: d_step { parked[1] -> parked[1] = false }
#if N > 2
    :: d_step { parked[2] -> parked[2] = false }
#endif
    :: atomic {
           /* a crashed owner's lease always expires in the end */
           owner != NONE && !expired && owner != alive_id[0] && owner != alive_id[1] -> expired = true
       }
    :: atomic {
           losses < MAXLOSS && stream_len > 0 ->
           /* The consumer reads at its own pace; what it read before the loss
              is all that matters, so it reads a prefix of its choice now (and
              the rest at the end, in Monitor): the same sequences as a
              separate consumer process, without its interleavings. */
           do
           :: read_pos < stream_len -> read_one()
           :: true -> break
           od;
           /* Redis restarted without persistence: streams, fences and the token are gone */
           losses++; inc_key = 0; fence = 0; stream_len = 0; read_pos = 0
       }
    od
}

proctype Monitor() {
    byte r;
    timeout ->
    /* the consumer catches up with the stream ... */
    d_step { do :: read_pos < stream_len -> read_one() :: else -> break od }
    /* P1: ... and since nothing can move any more, every committed row must have been delivered */
    assert(committed == N);
    r = 0;
    do
    :: r < N -> assert(delivered[r]); r++
    :: else -> break
    od
}

init {
    atomic {
        alive_id[0] = 0;
        alive_id[1] = 1;
        run Writer();
        run Relay(0);
        run Relay(1);
        run Faults();
        run Monitor()
    }
}
