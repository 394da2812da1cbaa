//! The vault CLI run as an operator runs it (also included by the benches).

/// `portcullis vault ARGS` in `dir`, `stdin` piped in (secrets never go in argv).
pub fn vault_cli(dir: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    vault_cli_env(dir, args, stdin, &[])
}

/// [`vault_cli`] with environment variables `env` set.
pub fn vault_cli_env(
    dir: &std::path::Path,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("vault")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run portcullis vault");
    let written = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    // A command that refuses its arguments exits before it reads: the pipe is closed then,
    // and its output says why.
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        panic!("write stdin: {e}");
    }
    child.wait_with_output().expect("portcullis vault exits")
}

/// A new vault in `dir` (vault.json, opened with master.key) holding `records` (name, kind,
/// secret): every CLI run's output, each checked to have succeeded.
pub fn vault_with(
    dir: &std::path::Path,
    records: &[(&str, &str, &str)],
) -> Vec<std::process::Output> {
    let at = ["--vault", "vault.json", "--master-key-file", "master.key"];
    let mut outs = vec![vault_cli(
        dir,
        &[
            "init",
            "--vault",
            "vault.json",
            "--new-master-key-file",
            "master.key",
        ],
        "",
    )];
    for (name, kind, secret) in records {
        let mut args = vec!["set", name, "--kind", kind];
        args.extend_from_slice(&at);
        outs.push(vault_cli(dir, &args, &format!("{secret}\n")));
    }
    for o in &outs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    outs
}
