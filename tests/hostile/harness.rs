//! Runs one hostile case: the `xinc` command line on crafted inputs, under an address-space limit
//! and a timeout, and checks that it fails the way a trusted loader must.
//!
//! Each case gets a folder `<tmp>/case/work` (the command's working directory, where the case's
//! inputs are written) and names its output `out` inside it. After the run:
//! - the exit status is 1 (a library error) or 2 (a usage error): not a signal (an abort on a
//!   failed allocation, a kill by the timeout), not 0;
//! - standard error contains the expected words (the file, flag or field and the cause);
//! - `work/out` is absent or empty, nothing else in `work` changed, and nothing appeared beside
//!   `work` (no write outside the output folder, no path escape).
//!
//! The peak resident memory of every case is sampled (every 1 ms for the first 200 ms, then every 20 ms) from `/proc/<pid>/status`
//! (`VmHWM` of the `xinc` image, after `exec`: `wait4`'s `ru_maxrss` would count the test
//! process's own memory, which the child shares between `fork` and `exec`), and the largest is
//! printed. A case that exits before its first sample shows 0.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Address space a case may use: far below what the attacks asked for (gigabytes to terabytes),
/// well above what a legitimate small input needs.
pub const MEMORY_LIMIT: u64 = 1 << 30;
/// Wall time a case may take before it counts as a hang.
pub const TIME_LIMIT: Duration = Duration::from_secs(60);

/// One hostile input and the failure it must produce.
pub struct Case {
    pub name: String,
    /// The command line; `{work}` stands for the case folder, `{out}` for `{work}/out`.
    pub args: Vec<String>,
    /// Every one of these must occur in standard error (case-sensitive).
    pub expect: Vec<String>,
    /// Writes the case's inputs into the case folder.
    pub setup: Box<dyn Fn(&Path) + Send + Sync>,
}

impl Case {
    pub fn new(
        name: &str,
        args: &[&str],
        expect: &[&str],
        setup: impl Fn(&Path) + Send + Sync + 'static,
    ) -> Case {
        Case {
            name: name.to_owned(),
            args: args.iter().map(|s| s.to_string()).collect(),
            expect: expect.iter().map(|s| s.to_string()).collect(),
            setup: Box::new(setup),
        }
    }
}

/// What a run did.
pub struct Outcome {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stderr: String,
    pub peak_rss_kib: i64,
    pub seconds: f64,
}

/// Runs every case (one thread per case, a few at a time), then fails listing every case that
/// misbehaved. Prints each case's outcome and the peak memory of the worst.
pub fn run_all(cases: Vec<Case>) {
    assert!(!cases.is_empty());
    let n = cases.len();
    let results: Vec<(String, Result<Outcome, String>)> = std::thread::scope(|s| {
        let chunks: Vec<&[Case]> = cases.chunks(n.div_ceil(2)).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|c| (c.name.clone(), check_case(c)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a case thread panicked"))
            .collect()
    });
    let mut failures = Vec::new();
    let mut worst = (0i64, String::new());
    for (name, r) in &results {
        match r {
            Ok(o) => {
                println!(
                    "ok   {name}: exit {:?}, {:.1} s, peak RSS {} MiB: {}",
                    o.code,
                    o.seconds,
                    o.peak_rss_kib / 1024,
                    first_line(&o.stderr)
                );
                if o.peak_rss_kib > worst.0 {
                    worst = (o.peak_rss_kib, name.clone());
                }
            }
            Err(e) => failures.push(format!("FAIL {name}: {e}")),
        }
    }
    println!(
        "{} cases; largest peak RSS {} MiB ({})",
        n,
        worst.0 / 1024,
        worst.1
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn first_line(s: &str) -> &str {
    s.lines()
        .rfind(|l| l.contains("rror"))
        .or_else(|| s.lines().last())
        .unwrap_or("")
}

/// Runs one case in a fresh temporary folder and checks the outcome.
pub fn check_case(case: &Case) -> Result<Outcome, String> {
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let work = root.path().join("work");
    std::fs::create_dir(&work).map_err(|e| e.to_string())?;
    (case.setup)(&work);
    let before = snapshot(root.path());
    let args: Vec<OsString> = case
        .args
        .iter()
        .map(|a| {
            a.replace("{out}", &format!("{}/out", work.display()))
                .replace("{work}", &work.display().to_string())
                .into()
        })
        .collect();
    let o = run_limited(&work, &args, &root.path().join("stderr"))?;
    let ctx = || format!("xinc {:?}\n--- stderr:\n{}", case.args, o.stderr);
    if let Some(sig) = o.signal {
        return Err(format!(
            "killed by signal {sig} (abort, or the timeout)\n{}",
            ctx()
        ));
    }
    if !matches!(o.code, Some(1) | Some(2)) {
        return Err(format!(
            "exit status {:?}, expected 1 or 2\n{}",
            o.code,
            ctx()
        ));
    }
    for word in &case.expect {
        if !o.stderr.contains(word.as_str()) {
            return Err(format!("the message lacks {word:?}\n{}", ctx()));
        }
    }
    if o.stderr.contains("panicked") {
        return Err(format!("panicked\n{}", ctx()));
    }
    let out = work.join("out");
    if out.is_dir()
        && std::fs::read_dir(&out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(format!(
            "left output behind in out/: {:?}\n{}",
            list(&out),
            ctx()
        ));
    }
    let mut after = snapshot(root.path());
    after.remove(Path::new("stderr"));
    after.remove(Path::new("work/out"));
    if after != before {
        let changed: Vec<_> = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .chain(before.keys().filter(|k| !after.contains_key(*k)).cloned())
            .collect();
        return Err(format!("wrote outside out/: {changed:?}\n{}", ctx()));
    }
    Ok(o)
}

/// Every path under `root` (not following symlinks) with its size and modification time (files
/// and links only).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u64, Option<SystemTime>)> {
    let mut map = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            // A folder's own time changes when an entry is made and removed again (a failed
            // command cleaning up after itself): only files' sizes and times count.
            let stamp = if meta.is_dir() {
                (0, None)
            } else {
                (meta.len(), meta.modified().ok())
            };
            map.insert(rel, stamp);
            if meta.is_dir() {
                stack.push(p);
            }
        }
    }
    map
}

fn list(dir: &Path) -> Vec<String> {
    snapshot(dir)
        .keys()
        .map(|p| p.display().to_string())
        .collect()
}

/// Runs `xinc args` in `cwd` with [`MEMORY_LIMIT`] of address space, killed after [`TIME_LIMIT`].
pub fn run_limited(cwd: &Path, args: &[OsString], stderr_path: &Path) -> Result<Outcome, String> {
    let stderr = std::fs::File::create(stderr_path).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xinc"));
    cmd.args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        // Few threads and malloc arenas: the address-space limit then measures the input's
        // demand, not the machine's core count.
        .env("RAYON_NUM_THREADS", "2")
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: MEMORY_LIMIT,
                rlim_max: MEMORY_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let child = cmd.spawn().map_err(|e| e.to_string())?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut peak_kib = 0i64;
    loop {
        peak_kib = peak_kib.max(xinc_high_water_kib(pid));
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        if r < 0 {
            return Err(format!("wait4: {}", std::io::Error::last_os_error()));
        }
        if start.elapsed() > TIME_LIMIT {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            let stderr = std::fs::read_to_string(stderr_path).unwrap_or_default();
            return Err(format!(
                "still running after {} s (a hang)\n--- stderr:\n{stderr}",
                TIME_LIMIT.as_secs()
            ));
        }
        // Fine sampling at first (most cases fail within milliseconds), then every 20 ms.
        let pause = if start.elapsed() < Duration::from_millis(200) {
            1
        } else {
            20
        };
        std::thread::sleep(Duration::from_millis(pause));
    }
    let stderr = std::fs::read_to_string(stderr_path).unwrap_or_default();
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else {
        (
            None,
            libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        )
    };
    Ok(Outcome {
        code,
        signal,
        stderr,
        peak_rss_kib: peak_kib,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// `VmHWM` (peak resident set, KiB) of process `pid` once it runs the `xinc` binary; 0 before its
/// `exec` or after its exit.
fn xinc_high_water_kib(pid: libc::pid_t) -> i64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    if field("Name:") != Some("xinc") {
        return 0;
    }
    field("VmHWM:")
        .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
