//! `oslet bench fs`: the shared filesystem's cost from an OSlet (virtio-fs through
//! virtiofsd, the test kernel's ring-3 FUSE client, `fs-bench=<bytes>,<files>`)
//! against the same work done by this process on the same kind of directory:
//! sequential write (with fsync) and read in 256 KiB chunks, then `files` times
//! create + stat + unlink. Records: `{"case","seq_write_mib_s","seq_read_mib_s",
//! "create_stat_unlink_per_s"}`, cases `oslet-virtiofs` and `host`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `oslet bench fs`.
#[derive(clap::Args, Debug)]
pub struct FsArgs {
    /// Write the records as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Bytes written and read sequentially.
    #[arg(long, default_value_t = 64 << 20)]
    pub bytes: u64,
    /// Files created, stat'ed and unlinked.
    #[arg(long, default_value_t = 1000)]
    pub files: u64,
}

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchFsError {
    /// A host file operation failed.
    #[error("{0}")]
    Io(String, #[source] std::io::Error),
    /// The OSlet run did not give a result.
    #[error("the OSlet run failed: {0}")]
    Oslet(String),
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> BenchFsError + '_ {
    move |e| BenchFsError::Io(what.to_string(), e)
}

const CHUNK: usize = 256 * 1024;

fn mib_s(bytes: u64, secs: f64) -> f64 {
    (bytes as f64 / (1 << 20) as f64 / secs.max(1e-9) * 10.0).round() / 10.0
}

fn host_case(dir: &Path, bytes: u64, files: u64) -> Result<serde_json::Value, BenchFsError> {
    let path = dir.join("host-bench.bin");
    let buf = vec![0x5au8; CHUNK];
    let t0 = Instant::now();
    let mut f = std::fs::File::create(&path).map_err(io("create the bench file"))?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        f.write_all(&buf[..n]).map_err(io("write"))?;
        left -= n as u64;
    }
    f.sync_all().map_err(io("fsync"))?;
    drop(f);
    let w = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut f = std::fs::File::open(&path).map_err(io("open"))?;
    let mut rbuf = vec![0u8; CHUNK];
    while f.read(&mut rbuf).map_err(io("read"))? > 0 {}
    let r = t1.elapsed().as_secs_f64();
    std::fs::remove_file(&path).map_err(io("unlink"))?;
    let t2 = Instant::now();
    for i in 0..files {
        let p = dir.join(format!("oslet-fs-bench-{i:08x}"));
        std::fs::File::create(&p).map_err(io("create"))?;
        std::fs::metadata(&p).map_err(io("stat"))?;
        std::fs::remove_file(&p).map_err(io("unlink"))?;
    }
    let c = t2.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "case": "host",
        "seq_write_mib_s": mib_s(bytes, w),
        "seq_read_mib_s": mib_s(bytes, r),
        "create_stat_unlink_per_s": (files as f64 / c.max(1e-9)).round(),
    }))
}

fn oslet_case(dir: &Path, bytes: u64, files: u64) -> Result<serde_json::Value, BenchFsError> {
    let share = dir.join("share");
    std::fs::create_dir_all(&share).map_err(io("create the shared directory"))?;
    let cfg = dir.join("bench-fs.toml");
    let text = format!(
        "[host]\noversubscribe = true\nlog_dir = \"logs\"\n[shared_fs]\npath = \"share\"\n\
         [[oslet]]\nname = \"fsbench\"\ncpus = 1\nmemory = \"64MiB\"\nkernel = \"builtin:testkernel\"\n\
         cmdline = \"fs-bench={bytes},{files}\"\nconsole = \"log\"\n"
    );
    std::fs::write(&cfg, text).map_err(io("write the bench config"))?;
    let exe = std::env::current_exe().map_err(io("find the oslet binary"))?;
    let out = std::process::Command::new(exe)
        .arg("up")
        .arg("--quiet")
        .arg(&cfg)
        .output()
        .map_err(io("run oslet up"))?;
    let log = std::fs::read_to_string(dir.join("logs").join("fsbench.log")).unwrap_or_default();
    let line = log
        .lines()
        .find_map(|l| l.split_once("fs-bench: ").map(|(_, j)| j.to_string()))
        .ok_or_else(|| {
            BenchFsError::Oslet(format!(
                "no fs-bench line (exit {:?}): {}{}",
                out.status.code(),
                log.lines().last().unwrap_or(""),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })?;
    let mut v: serde_json::Value = serde_json::from_str(&line)
        .map_err(|e| BenchFsError::Oslet(format!("bad JSON {line:?}: {e}")))?;
    v["case"] = "oslet-virtiofs".into();
    Ok(v)
}

/// `oslet bench fs`: prints a table, writes JSON when asked; exit status.
pub fn run(args: &FsArgs) -> i32 {
    let dir = match tempfile_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("oslet bench fs: {}", crate::cli::error_chain(&e));
            return 1;
        }
    };
    let result = (|| {
        let o = oslet_case(&dir, args.bytes, args.files)?;
        let h = host_case(&dir.join("share"), args.bytes, args.files)?;
        Ok::<_, BenchFsError>(vec![o, h])
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let records = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("oslet bench fs: {}", crate::cli::error_chain(&e));
            return 1;
        }
    };
    println!("| case | seq write MiB/s | seq read MiB/s | create+stat+unlink /s |");
    println!("| --- | --- | --- | --- |");
    for r in &records {
        println!(
            "| {} | {} | {} | {} |",
            r["case"].as_str().unwrap_or("?"),
            r["seq_write_mib_s"],
            r["seq_read_mib_s"],
            r["create_stat_unlink_per_s"]
        );
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "benchmark": "fs",
            "bytes": args.bytes,
            "files": args.files,
            "host": crate::bench::host_facts(),
            "records": records,
            "notes": ["oslet-virtiofs: the test kernel's FUSE client in guest ring 3, one request in flight, 256 KiB chunks, cache=never; host: this process on the same directory"],
        });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("oslet bench fs: cannot write {}: {e}", path.display());
            return 1;
        }
    }
    0
}

fn tempfile_dir() -> Result<PathBuf, BenchFsError> {
    let d = std::env::temp_dir().join(format!("oslet-bench-fs-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(io("create a temporary directory"))?;
    Ok(d)
}
