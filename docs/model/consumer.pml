/*
 * The consumer's stream lease and inbox commit, as checked by Spin (docs/adr/0012).
 *
 *   spin -a docs/model/consumer.pml && gcc -O1 -DSAFETY -o pan pan.c && ./pan -m20000
 *
 * One partition stream holding M entries (distinct messages of one key), one
 * consumer group, C consumer processes (inbox/_runner.py). A consumer loops:
 * take or renew the stream lease (SET NX PX / the renew script), claim every
 * entry pending on the stream after a takeover (XAUTOCLAIM from 0-0), read the
 * next new entry (XREADGROUP >), handle it in one database transaction whose
 * first statement is the inbox insert (INSERT .. ON CONFLICT DO NOTHING:
 * PostgreSQL blocks it on another transaction's uncommitted row of the same
 * message, then reports the conflict or inserts), commit, then acknowledge.
 *
 * Faults: the lease expiring at any instant (a frozen consumer, a consumer
 * cut off from Redis), a consumer crashing at any step (its transaction rolls
 * back, the restart is a new consumer), and the database connection lost
 * between the handler and the commit (rollback, retry in place).
 *
 * Properties:
 *   C1 no handler effect applied twice: at every commit a message's committed
 *      effects are at most one (assertion in commit);
 *   C2 nothing lost: when nothing can move any more, every entry's effect is
 *      committed (Monitor).
 *
 * Variants (-D at spin -a time), each must yield a counter-example:
 *   -DNO_INBOX        the handler's effect is committed without the inbox row
 *                     (C1 fails: a takeover re-delivers an entry);
 *   -DACK_FIRST       the entry is acknowledged before the commit (C2 fails:
 *                     a crash between the two drops it).
 */

#define M 2         /* stream entries */
#define C 2         /* consumer processes */
#define MAXCRASH 1
#define MAXEXPIRE 2
#define MAXDBLOST 1
#define NONE 255

/* ---- Redis ---- */
byte lease = NONE;      /* <scope>:outboxkit:lease:<stream> */
bool expired = false;
byte last_read = 0;     /* the group's last-delivered id: entries < last_read were delivered */
bool acked[M];
byte pel_owner[M];      /* consumer an unacked delivered entry is pending on */

/* ---- the consumer's database ---- */
bool inbox[M];          /* committed inbox rows */
byte row_lock[M];       /* the transaction holding an uncommitted inbox row (NONE) */
byte effects[M];        /* committed handler effects */

byte alive_id[C];
byte crashes = 0;
byte expiries = 0;
byte db_lost = 0;

proctype Consumer(byte i) {
    byte me = i;
    bool holds = false;
    byte m = NONE;      /* the entry in hand */
    byte k;
    bool dup;

start:
    atomic { alive_id[i] = me; holds = false; m = NONE }
end_loop:
    do
    :: /* acquire or renew; a new owner claims every pending entry (XAUTOCLAIM 0-0, min idle 0) */
       atomic {
           m == NONE && !(holds && lease == me && !expired) && (lease == NONE || lease == me || expired) ->
           lease = me; expired = false; holds = true;
           k = 0;
           do
           :: k < M -> if :: k < last_read && !acked[k] -> pel_owner[k] = me :: else -> skip fi; k++
           :: else -> break
           od
       }
    :: /* next entry: the oldest pending on me (claimed), else a new one (XREADGROUP >);
          only while this process still holds the lease (_still_owner renews just before) */
       atomic {
           m == NONE && holds && lease == me && !expired &&
           (last_read < M || (!acked[0] && pel_owner[0] == me) || (!acked[1] && pel_owner[1] == me)) ->
           if
           :: !acked[0] && pel_owner[0] == me && 0 < last_read -> m = 0
           :: else ->
               if
               :: !acked[1] && pel_owner[1] == me && 1 < last_read -> m = 1
               :: else -> m = last_read; pel_owner[m] = me; last_read++
               fi
           fi
       }
    :: /* lease lost (not renewed in time, or taken): not one more entry */
       holds && m == NONE && !(lease == me && !expired) -> holds = false
    :: m != NONE -> goto handle
    :: crashes < MAXCRASH -> goto crash
    od;

handle:
#ifdef NO_INBOX
    dup = false;
#else
    /* the inbox insert: blocks while another transaction holds the row */
    atomic {
        row_lock[m] == NONE ->
        if
        :: inbox[m] -> dup = true
        :: else -> dup = false; row_lock[m] = me
        fi
    }
#endif
    if
    :: crashes < MAXCRASH -> goto crash /* inbox.after_handler: the transaction rolls back */
    :: db_lost < MAXDBLOST -> atomic { db_lost++; if :: row_lock[m] == me -> row_lock[m] = NONE :: else -> skip fi }; goto handle
    :: true
    fi;
#ifdef ACK_FIRST
    acked[m] = true;
    if
    :: crashes < MAXCRASH -> goto crash
    :: true
    fi;
#endif
    atomic {
        /* commit: the effect and the inbox row together */
        if
        :: !dup -> effects[m]++; inbox[m] = true
        :: else -> skip
        fi;
        assert(effects[m] <= 1); /* C1 */
        if :: row_lock[m] == me -> row_lock[m] = NONE :: else -> skip fi
    }
    if
    :: crashes < MAXCRASH -> goto crash /* inbox.after_commit: not acknowledged yet */
    :: true
    fi;
    acked[m] = true; /* XACK after the commit */
    m = NONE;
    goto end_loop;

crash:
    atomic {
        crashes++;
        /* the session dies: its uncommitted inbox row goes with it */
        k = 0;
        do
        :: k < M -> if :: row_lock[k] == me -> row_lock[k] = NONE :: else -> skip fi; k++
        :: else -> break
        od;
        me = me + C;
        alive_id[i] = me;
        m = NONE
    }
    goto start
}

proctype Faults() {
end_faults:
    do
    :: atomic { lease != NONE && !expired && expiries < MAXEXPIRE -> expired = true; expiries++ }
    :: atomic { lease != NONE && !expired && lease != alive_id[0] && lease != alive_id[1] -> expired = true }
    od
}

proctype Monitor() {
    byte k;
    timeout ->
    k = 0;
    do
    :: k < M -> assert(effects[k] == 1); k++ /* C2 */
    :: else -> break
    od
}

init {
    atomic {
        row_lock[0] = NONE;
        row_lock[1] = NONE;
        pel_owner[0] = NONE;
        pel_owner[1] = NONE;
        alive_id[0] = 0;
        alive_id[1] = 1;
        run Consumer(0);
        run Consumer(1);
        run Faults();
        run Monitor()
    }
}
