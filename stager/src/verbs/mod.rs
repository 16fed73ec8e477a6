//! One file per verb of `paddock-stager`.

pub mod logs;
pub mod ps;
pub mod restart;
pub mod run;
pub mod scale;
pub mod stage;
pub mod stop;
pub mod watch;

/// A progress line (`-----> …`, the buildpack style) on stdout.
pub fn progress(line: &str) {
    println!("-----> {line}");
}
