//! One SQL session through `psql`, kept open across several statements.
//!
//! Why `psql` and not a Rust driver: libpq is what the operator's other tools use, so a
//! connection string, `.pgpass`, `PG*` variables, SSL and authentication behave exactly as
//! they expect; and a non-exclusive base backup needs one session held open from
//! `pg_backup_start()` to `pg_backup_stop()`, which a coprocess gives us. Each statement's
//! rows come back unaligned, fields separated by the ASCII unit separator, followed by a
//! marker line; values that may hold newlines are hex-encoded by the query itself.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::{Error, Result};

const SEP: char = '\u{1f}';
const END: &str = "__cairn_end_of_result__";

pub struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr_file: std::path::PathBuf,
}

/// The `psql` binary: `CAIRN_PSQL`, else `psql` on `PATH`.
pub fn psql_binary() -> String {
    std::env::var("CAIRN_PSQL").unwrap_or_else(|_| "psql".into())
}

impl Session {
    /// Connects with a libpq connection string or URI (empty: libpq's defaults and `PG*`).
    pub fn connect(conn: &str) -> Result<Session> {
        let stderr_file = std::env::temp_dir().join(format!("cairn-psql-{}-{}.err", std::process::id(), unique()));
        let err = std::fs::File::create(&stderr_file).map_err(|e| Error::io("psql error log", e))?;
        let mut cmd = Command::new(psql_binary());
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-F"]).arg(SEP.to_string());
        cmd.arg("-w"); // never prompt for a password: fail instead
        if !conn.is_empty() {
            cmd.arg("-d").arg(conn);
        }
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::from(err)).spawn().map_err(|e| {
                Error::Sql(format!("cannot run {}: {e} (is the PostgreSQL client installed?)", psql_binary()))
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Error::Sql("psql: no pipes".into()));
        };
        let mut s = Session { child, stdin, stdout: BufReader::new(stdout), stderr_file };
        s.query("SELECT 1")?;
        Ok(s)
    }

    /// Runs one statement; returns its rows, each a vector of fields.
    pub fn query(&mut self, sql: &str) -> Result<Vec<Vec<String>>> {
        let script = format!("{sql};\n\\echo {END}\n");
        if self.stdin.write_all(script.as_bytes()).and_then(|_| self.stdin.flush()).is_err() {
            return Err(self.failure());
        }
        let mut rows = Vec::new();
        loop {
            let mut line = String::new();
            match self.stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return Err(self.failure()),
                Ok(_) => {}
            }
            let line = line.trim_end_matches('\n');
            if line == END {
                return Ok(rows);
            }
            rows.push(line.split(SEP).map(str::to_string).collect());
        }
    }

    /// The one value of a one-row, one-column statement.
    pub fn value(&mut self, sql: &str) -> Result<String> {
        let rows = self.query(sql)?;
        rows.into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .ok_or_else(|| Error::Sql(format!("no result from: {sql}")))
    }

    /// psql stopped: its error output, as one line.
    fn failure(&mut self) -> Error {
        let _ = self.child.wait();
        let msg = std::fs::read_to_string(&self.stderr_file).unwrap_or_default();
        let msg: Vec<&str> = msg.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        Error::Sql(if msg.is_empty() { "psql ended unexpectedly".into() } else { msg.join(" ") })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.stdin.write_all(b"\\q\n");
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr_file);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Decodes the hex that `encode(..., 'hex')` returns.
pub fn unhex(s: &str) -> Result<String> {
    let bytes =
        cairn_format::id::from_hex(s.trim()).ok_or_else(|| Error::Sql("malformed hex from the server".into()))?;
    String::from_utf8(bytes).map_err(|_| Error::Sql("backup label is not UTF-8".into()))
}

/// A single-quoted SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
