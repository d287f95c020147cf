//! keelfs integration tests. The library part holds the harnesses the test
//! targets under `tests/tests/` share: [`crashsim`], the filesystem-level
//! crash simulator (issue 4).

pub mod crashsim;
