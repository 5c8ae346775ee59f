//! The hostile corpus: crafted inputs of every kind xinc reads (checkpoints, safetensors, configs,
//! NeRV flags, images, both dataset formats, flow, manifests, `batch.toml`, training state, CLI
//! sizes), each run as the command line under a memory limit and a timeout ([`harness`]).
//! Every case must fail with exit status 1 or 2, a message naming the cause, no output left
//! behind and nothing written outside its output folder.

mod harness;

mod checkpoints;
mod configs;
mod datasets;

#[test]
fn hostile_checkpoints() {
    harness::run_all(checkpoints::cases());
}

#[test]
fn hostile_configs_and_flags() {
    harness::run_all(configs::cases());
}

#[test]
fn hostile_datasets_and_paths() {
    harness::run_all(datasets::cases());
}
