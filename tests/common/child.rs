//! Child processes for the crash, restart, signal and many-server tests: the test binary run
//! again, running one ignored test that plays a game server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Instant;

/// This test binary, set to run only the ignored test `name` (which reads its orders from the
/// environment), with its stdout piped for [`stdout_lines`].
pub fn test_child(name: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args([
            "--ignored",
            "--exact",
            name,
            "--nocapture",
            "--test-threads=1",
        ])
        .stdout(Stdio::piped());
    command
}

/// The child's stdout, a line at a time with the moment it arrived, read on a thread of its own
/// so that the child never blocks on a full pipe. The channel closes when the child's stdout does.
pub fn stdout_lines(child: &mut Child) -> Receiver<(Instant, String)> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}
