//! Other platforms: a plain child process; the tree is killed only through the leader.

use std::io;
use std::process::{Child, Command};

pub const CAN_SCAN_MARKED: bool = false;

#[derive(Debug)]
pub struct Tree;

pub fn spawn(mut cmd: Command, _opts: &super::SpawnOptions) -> io::Result<(Child, Tree)> {
    Ok((cmd.spawn()?, Tree))
}

pub fn terminate(_pid: u32, _tree: &Tree) {}

pub fn kill_tree(_pid: u32, _tree: &Tree) {}

pub fn kill_pid(_pid: u32) {}

pub fn marked_processes(_marker: &str) -> Vec<u32> {
    Vec::new()
}

/// The tree's leader runs the program itself.
pub fn leader(
    program: &std::path::Path,
    args: &[std::ffi::OsString],
) -> (std::path::PathBuf, Vec<std::ffi::OsString>) {
    (program.to_path_buf(), args.to_vec())
}
