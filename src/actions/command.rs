//! The `command` step: runs a program (no shell unless the program is one) with the decision in
//! its environment, under the step's timeout. Exit status 0 is done; any other is a failure
//! worth retrying; a program that cannot be started is a permanent failure. Its output goes,
//! truncated, into the journal.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::{StepContext, StepError, StepResult};
use crate::config::CommandStep;

/// How much of a command's output the journal keeps.
const OUTPUT_LIMIT: usize = 2048;

pub async fn run(step: &CommandStep, ctx: &StepContext, timeout: Duration) -> StepResult {
    let mut child = tokio::process::Command::new(&step.program)
        .args(&step.args)
        .envs(&step.env)
        .env("WITNESS_GROUP", &ctx.group)
        .env("WITNESS_EPOCH", ctx.epoch.to_string())
        .env("WITNESS_FROM", &ctx.from)
        .env("WITNESS_TO", &ctx.to)
        .env("WITNESS_STEP", &ctx.step)
        .env("WITNESS_REASON", &ctx.reason)
        .env("WITNESS_IDEMPOTENCY_KEY", ctx.idempotency_key())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A timed-out or abandoned attempt must not leave the program running.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| StepError::permanent(format!("cannot start {:?}: {e}", step.program)))?;
    let (mut stdout, mut stderr) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = tokio::time::timeout(timeout, async {
        let (_, _, status) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err), child.wait());
        status
    })
    .await;
    let output = describe_output(&out, &err);
    match outcome {
        Err(_) => Err(StepError::retryable(format!("{} killed after the step timeout{output}", step.program))),
        Ok(Err(e)) => Err(StepError::retryable(format!("waiting for {}: {e}", step.program))),
        Ok(Ok(status)) if status.success() => Ok(format!("{} exited 0{output}", step.program)),
        Ok(Ok(status)) => Err(StepError::retryable(format!("{} {status}{output}", step.program))),
    }
}

/// Nothing is run: the program must exist and be executable.
pub fn check(step: &CommandStep) -> StepResult {
    let found = if step.program.contains('/') {
        Some(std::path::PathBuf::from(&step.program))
    } else {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(&step.program)).find(|p| p.is_file()))
    };
    use std::os::unix::fs::PermissionsExt;
    match found.as_ref().map(std::fs::metadata) {
        Some(Ok(m)) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
            Ok(format!("{} is executable (not run)", found.expect("matched").display()))
        }
        Some(Ok(_)) => Err(StepError::permanent(format!("{} is not an executable file", step.program))),
        Some(Err(e)) => Err(StepError::permanent(format!("{}: {e}", step.program))),
        None => Err(StepError::permanent(format!("{} not found on PATH", step.program))),
    }
}

/// `: stdout "…" stderr "…"`, each cut to what the journal keeps.
fn describe_output(out: &[u8], err: &[u8]) -> String {
    let mut text = String::new();
    for (name, bytes) in [("stdout", out), ("stderr", err)] {
        let s = String::from_utf8_lossy(bytes);
        let s = s.trim();
        if s.is_empty() {
            continue;
        }
        let cut = if s.len() > OUTPUT_LIMIT {
            let end = (0..=OUTPUT_LIMIT).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
            format!("{}… ({} bytes cut)", &s[..end], s.len() - end)
        } else {
            s.to_string()
        };
        text.push_str(&format!("; {name}: {cut:?}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> StepContext {
        StepContext {
            group: "app".into(),
            epoch: 7,
            from: "east".into(),
            to: "west".into(),
            reason: "east down".into(),
            decided_at_ms: 0,
            step: "scale".into(),
        }
    }

    fn sh(script: &str) -> CommandStep {
        CommandStep { program: "sh".into(), args: vec!["-c".into(), script.into()], env: Default::default() }
    }

    #[tokio::test]
    async fn environment_exit_status_and_output() {
        let ok = run(
            &sh("echo $WITNESS_GROUP $WITNESS_EPOCH $WITNESS_FROM $WITNESS_TO $WITNESS_IDEMPOTENCY_KEY"),
            &ctx(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(ok.unwrap(), "sh exited 0; stdout: \"app 7 east west app:7:scale\"");
        let failed = run(&sh("echo nope >&2; exit 3"), &ctx(), Duration::from_secs(5)).await.unwrap_err();
        assert!(
            failed.retryable && failed.message.contains("exit status: 3") && failed.message.contains("nope"),
            "{failed}"
        );
        let missing = CommandStep { program: "/nonexistent/x".into(), args: vec![], env: Default::default() };
        assert!(!run(&missing, &ctx(), Duration::from_secs(5)).await.unwrap_err().retryable);
        assert!(check(&missing).is_err());
        assert!(check(&sh("true")).is_ok());
    }

    #[tokio::test]
    async fn timeout_kills_and_output_is_truncated() {
        let slow = run(&sh("sleep 5"), &ctx(), Duration::from_millis(100)).await.unwrap_err();
        assert!(slow.retryable && slow.message.contains("killed"), "{slow}");
        let long = describe_output("é".repeat(3000).as_bytes(), b"");
        assert!(long.len() < OUTPUT_LIMIT + 100 && long.contains("bytes cut"), "{long}");
    }
}
