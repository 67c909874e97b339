//! The agent's outbox: contribution records waiting for the head, on disk, so that what a
//! machine contributed while the head was away (or while the agent was stopped) reaches the
//! head's ledger exactly once.
//!
//! One SQLite file (`outbox.sqlite` in the agent's state directory, WAL) holds:
//! - `meta`: the next sequence number (shared by reports and records, never reused) and the
//!   open accumulator (the CPU-seconds of the record being filled and when it was opened);
//! - `records(seq, hour_start, cpu_seconds)`: closed records not yet acknowledged;
//! - `tally(hour_start, cpu_seconds)`: every closed record's CPU-seconds per clock hour, kept
//!   after the head acknowledges them (never pruned: a row an hour is 9,000 rows a year), so
//!   the machine can say what it contributed today, this week and in all ([`Outbox::contribution`]).
//!
//! Reports themselves are not queued: each one carries the node's whole current state, so the
//! latest supersedes the rest; the CPU-seconds they report are folded into records here, so no
//! contribution is lost with them. A record never spans two clock hours (the ledger is per
//! hour), and the head drops any `(node, seq)` it already holds, so sending a record twice
//! (a reconnect before the acknowledgement arrived) is harmless.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// A closed record waiting for the head.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Record {
    pub seq: u64,
    /// Unix seconds, a whole hour.
    pub hour_start: i64,
    pub cpu_seconds: f64,
}

/// What this machine contributed, in CPU-seconds, the open record included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Contribution {
    /// Since the start of the local day.
    pub today_cpu_seconds: f64,
    /// Since the start of the local week (Monday).
    pub week_cpu_seconds: f64,
    pub total_cpu_seconds: f64,
    /// The first hour counted (Unix seconds), when anything was.
    pub since_unix: Option<i64>,
}

/// The outbox of one enrolled node.
#[derive(Debug)]
pub struct Outbox {
    conn: Connection,
    /// Sequence numbers reserved on disk and not handed out yet: `(next, end)`.
    reserved: Option<(u64, u64)>,
}

/// How many sequence numbers one write reserves for reports (a report a second: one write a
/// minute). Numbers reserved and not used before a restart are skipped; the numbering only has
/// to grow.
pub const SEQ_BLOCK: u64 = 60;

const HOUR: i64 = 3600;

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Outbox {
    /// Opens (or creates) the outbox at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<Outbox> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v REAL NOT NULL) STRICT;
             CREATE TABLE IF NOT EXISTS records (
                 seq         INTEGER PRIMARY KEY,
                 hour_start  INTEGER NOT NULL,
                 cpu_seconds REAL    NOT NULL
             ) STRICT;
             CREATE TABLE IF NOT EXISTS tally (
                 hour_start  INTEGER PRIMARY KEY,
                 cpu_seconds REAL    NOT NULL
             ) STRICT;
             INSERT OR IGNORE INTO meta (k, v) VALUES ('next_seq', 1);",
        )?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version < 1 {
            // An outbox from before the tally: what still waits for the head is counted; what
            // the head already acknowledged is gone from here (the head's ledger has it).
            conn.execute_batch(
                "BEGIN;
                 INSERT INTO tally (hour_start, cpu_seconds)
                     SELECT hour_start, sum(cpu_seconds) FROM records GROUP BY hour_start
                     ON CONFLICT (hour_start) DO UPDATE SET cpu_seconds = cpu_seconds + excluded.cpu_seconds;
                 PRAGMA user_version = 1;
                 COMMIT;",
            )?;
        }
        Ok(Outbox {
            conn,
            reserved: None,
        })
    }

    fn meta(&self, k: &str) -> rusqlite::Result<Option<f64>> {
        self.conn
            .prepare_cached("SELECT v FROM meta WHERE k = ?1")?
            .query_row([k], |r| r.get(0))
            .optional()
    }

    /// Takes the next sequence number for a report: greater than every number taken before,
    /// across restarts, from a block reserved on disk [`SEQ_BLOCK`] at a time.
    pub fn next_seq(&mut self) -> rusqlite::Result<u64> {
        if let Some((next, end)) = self.reserved
            && next < end
        {
            self.reserved = Some((next + 1, end));
            return Ok(next);
        }
        let tx = self.conn.transaction()?;
        let seq: f64 = tx.query_row("SELECT v FROM meta WHERE k = 'next_seq'", [], |r| r.get(0))?;
        tx.execute(
            "UPDATE meta SET v = v + ?1 WHERE k = 'next_seq'",
            [SEQ_BLOCK as f64],
        )?;
        tx.commit()?;
        let seq = seq as u64;
        self.reserved = Some((seq + 1, seq + SEQ_BLOCK));
        Ok(seq)
    }

    /// Adds `cpu_seconds` contributed up to `now`, closing the open record first if it was
    /// opened `record_every` ago or in an earlier clock hour.
    pub fn add(
        &mut self,
        cpu_seconds: f64,
        now: SystemTime,
        record_every: Duration,
    ) -> rusqlite::Result<()> {
        let now_s = unix(now);
        let opened = self.meta("open_at")?;
        if let Some(opened) = opened {
            let same_hour = (opened as i64).div_euclid(HOUR) == (now_s as i64).div_euclid(HOUR);
            if !same_hour || now_s - opened >= record_every.as_secs_f64() {
                self.close()?;
            } else if !(cpu_seconds.is_finite() && cpu_seconds > 0.0) {
                // An idle second with a record open: nothing to write.
                return Ok(());
            }
        }
        let tx = self.conn.transaction()?;
        let open: Option<f64> = tx
            .query_row("SELECT v FROM meta WHERE k = 'open_at'", [], |r| r.get(0))
            .optional()?;
        if open.is_none() {
            tx.execute(
                "INSERT INTO meta (k, v) VALUES ('open_at', ?1), ('open_cpu', 0)
                 ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                [now_s],
            )?;
        }
        if cpu_seconds.is_finite() && cpu_seconds > 0.0 {
            tx.prepare_cached("UPDATE meta SET v = v + ?1 WHERE k = 'open_cpu'")?
                .execute([cpu_seconds])?;
        }
        tx.commit()
    }

    /// Closes the open record (if any) into `records` with the next sequence number.
    pub fn close(&mut self) -> rusqlite::Result<Option<u64>> {
        let tx = self.conn.transaction()?;
        let open: Option<f64> = tx
            .query_row("SELECT v FROM meta WHERE k = 'open_at'", [], |r| r.get(0))
            .optional()?;
        let Some(opened) = open else {
            return Ok(None);
        };
        let cpu: f64 = tx
            .query_row("SELECT v FROM meta WHERE k = 'open_cpu'", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0.0);
        let seq: f64 = tx.query_row("SELECT v FROM meta WHERE k = 'next_seq'", [], |r| r.get(0))?;
        tx.execute("UPDATE meta SET v = v + 1 WHERE k = 'next_seq'", [])?;
        let hour_start = (opened as i64).div_euclid(HOUR) * HOUR;
        tx.execute(
            "INSERT INTO records (seq, hour_start, cpu_seconds) VALUES (?1, ?2, ?3)",
            params![seq as i64, hour_start, cpu.max(0.0)],
        )?;
        // In the same transaction: the tally counts each record exactly once.
        tx.execute(
            "INSERT INTO tally (hour_start, cpu_seconds) VALUES (?1, ?2)
             ON CONFLICT (hour_start) DO UPDATE SET cpu_seconds = cpu_seconds + excluded.cpu_seconds",
            params![hour_start, cpu.max(0.0)],
        )?;
        tx.execute("DELETE FROM meta WHERE k IN ('open_at', 'open_cpu')", [])?;
        tx.commit()?;
        Ok(Some(seq as u64))
    }

    /// The oldest `limit` records not yet acknowledged.
    pub fn pending(&self, limit: usize) -> rusqlite::Result<Vec<Record>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, hour_start, cpu_seconds FROM records ORDER BY seq LIMIT ?1",
        )?;
        stmt.query_map([limit as i64], |r| {
            Ok(Record {
                seq: r.get::<_, i64>(0)? as u64,
                hour_start: r.get(1)?,
                cpu_seconds: r.get(2)?,
            })
        })?
        .collect()
    }

    /// The CPU-seconds of the open record, if one is open.
    pub fn open_cpu(&self) -> rusqlite::Result<Option<f64>> {
        self.meta("open_cpu")
    }

    /// How many records wait.
    pub fn len(&self) -> rusqlite::Result<u64> {
        self.conn
            .query_row("SELECT count(*) FROM records", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
    }

    /// Whether no record waits.
    pub fn is_empty(&self) -> rusqlite::Result<bool> {
        self.len().map(|n| n == 0)
    }

    /// What this machine contributed: the tally plus the open record, counting the hours that
    /// start at or after `today_start` and `week_start` (Unix seconds of the local day's and
    /// week's start; an hour that straddles one is counted after it, as the ledger is per hour).
    pub fn contribution(
        &self,
        today_start: i64,
        week_start: i64,
    ) -> rusqlite::Result<Contribution> {
        let floor = |t: i64| t.div_euclid(HOUR) * HOUR;
        let (today_from, week_from) = (floor(today_start), floor(week_start));
        let mut c = self.conn.query_row(
            "SELECT coalesce(sum(CASE WHEN hour_start >= ?1 THEN cpu_seconds END), 0),
                    coalesce(sum(CASE WHEN hour_start >= ?2 THEN cpu_seconds END), 0),
                    coalesce(sum(cpu_seconds), 0),
                    min(hour_start)
             FROM tally",
            params![today_from, week_from],
            |r| {
                Ok(Contribution {
                    today_cpu_seconds: r.get(0)?,
                    week_cpu_seconds: r.get(1)?,
                    total_cpu_seconds: r.get(2)?,
                    since_unix: r.get(3)?,
                })
            },
        )?;
        if let (Some(opened), Some(cpu)) = (self.meta("open_at")?, self.meta("open_cpu")?) {
            let hour = floor(opened as i64);
            let cpu = cpu.max(0.0);
            c.total_cpu_seconds += cpu;
            if hour >= week_from {
                c.week_cpu_seconds += cpu;
            }
            if hour >= today_from {
                c.today_cpu_seconds += cpu;
            }
            c.since_unix = Some(c.since_unix.map_or(hour, |s| s.min(hour)));
        }
        Ok(c)
    }

    /// Drops every record the head acknowledged (`seq <= up_to`).
    pub fn ack(&mut self, up_to: u64) -> rusqlite::Result<usize> {
        self.conn.execute(
            "DELETE FROM records WHERE seq <= ?1",
            [i64::try_from(up_to).unwrap_or(i64::MAX)],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn records_close_on_time_and_hour_and_survive_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("outbox.sqlite");
        let every = Duration::from_secs(60);
        let base = 1_800_000_000 / 3600 * 3600; // a whole hour
        {
            let mut o = Outbox::open(&path).unwrap();
            // Reports take numbers from a reserved block; records after it.
            assert_eq!(o.next_seq().unwrap(), 1);
            assert_eq!(o.next_seq().unwrap(), 2);
            o.add(1.5, at(base + 10), every).unwrap();
            o.add(2.0, at(base + 40), every).unwrap();
            assert!(o.is_empty().unwrap());
            // 60 s after opening: the record closes and a new one opens.
            o.add(1.0, at(base + 75), every).unwrap();
            let p = o.pending(10).unwrap();
            assert_eq!(p.len(), 1);
            assert_eq!(p[0].seq, 1 + SEQ_BLOCK);
            assert_eq!(p[0].hour_start, base as i64);
            assert!((p[0].cpu_seconds - 3.5).abs() < 1e-9);
        }
        // Reopened (an agent restart): the open accumulator and the numbering carry on.
        let mut o = Outbox::open(&path).unwrap();
        // Crossing the hour closes the record in its own hour.
        o.add(4.0, at(base + 3600 + 5), every).unwrap();
        let p = o.pending(10).unwrap();
        let (r1, r2) = (1 + SEQ_BLOCK, 2 + SEQ_BLOCK);
        assert_eq!(p.iter().map(|r| r.seq).collect::<Vec<_>>(), [r1, r2]);
        assert!((p[1].cpu_seconds - 1.0).abs() < 1e-9);
        assert_eq!(p[1].hour_start, base as i64);
        // After a restart, report numbers start past everything taken before.
        let report = o.next_seq().unwrap();
        assert_eq!(report, 3 + SEQ_BLOCK);
        assert_eq!(o.close().unwrap(), Some(3 + 2 * SEQ_BLOCK));
        let last = o.pending(10).unwrap().pop().unwrap();
        assert_eq!(last.hour_start, base as i64 + 3600);
        assert!((last.cpu_seconds - 4.0).abs() < 1e-9);
        assert_eq!(o.ack(r2).unwrap(), 2);
        assert_eq!(
            o.pending(10)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>(),
            [3 + 2 * SEQ_BLOCK]
        );
        assert_eq!(o.close().unwrap(), None, "nothing open");
    }

    #[test]
    fn the_tally_keeps_what_the_head_acknowledged_and_counts_today_and_the_week() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("outbox.sqlite");
        let every = Duration::from_secs(300);
        // Monday 00:00 (UTC, 2027-01-18), and that week's Wednesday 00:00 as "today".
        let monday: i64 = 20_836 * 86_400;
        let wednesday = monday + 2 * 86_400;
        let mut o = Outbox::open(&path).unwrap();
        assert_eq!(
            o.contribution(wednesday, monday).unwrap(),
            Contribution::default(),
            "nothing yet"
        );
        // Last week, Monday and Wednesday: three records in three hours.
        o.add(100.0, at(monday as u64 - 86_400 + 10), every)
            .unwrap();
        o.close().unwrap();
        o.add(200.0, at(monday as u64 + 3600 + 10), every).unwrap();
        o.close().unwrap();
        o.add(40.0, at(wednesday as u64 + 7200), every).unwrap();
        o.close().unwrap();
        // The head acknowledges everything: the outbox empties, the tally stays.
        let last = o.pending(10).unwrap().last().unwrap().seq;
        o.ack(last).unwrap();
        assert!(o.is_empty().unwrap());
        // An open record counts too.
        o.add(2.5, at(wednesday as u64 + 7300), every).unwrap();
        let c = o.contribution(wednesday, monday).unwrap();
        assert!((c.today_cpu_seconds - 42.5).abs() < 1e-9, "{c:?}");
        assert!((c.week_cpu_seconds - 242.5).abs() < 1e-9, "{c:?}");
        assert!((c.total_cpu_seconds - 342.5).abs() < 1e-9, "{c:?}");
        assert_eq!(c.since_unix, Some(monday - 86_400));
        drop(o);
        // Reopened: the same figures, and closing the open record does not count it twice.
        let mut o = Outbox::open(&path).unwrap();
        o.close().unwrap();
        let again = o.contribution(wednesday, monday).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn an_outbox_from_before_the_tally_counts_what_still_waits() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("outbox.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE meta (k TEXT PRIMARY KEY, v REAL NOT NULL) STRICT;
                 CREATE TABLE records (seq INTEGER PRIMARY KEY, hour_start INTEGER NOT NULL,
                                       cpu_seconds REAL NOT NULL) STRICT;
                 INSERT INTO meta VALUES ('next_seq', 10);
                 INSERT INTO records VALUES (7, 3600, 5.0), (8, 3600, 1.0), (9, 7200, 2.0);",
            )
            .unwrap();
        }
        let o = Outbox::open(&path).unwrap();
        let c = o.contribution(0, 0).unwrap();
        assert!((c.total_cpu_seconds - 8.0).abs() < 1e-9, "{c:?}");
        drop(o);
        // Migrated once only.
        let o = Outbox::open(&path).unwrap();
        assert!((o.contribution(0, 0).unwrap().total_cpu_seconds - 8.0).abs() < 1e-9);
    }
}
