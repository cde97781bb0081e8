//! The experiment grid: its spec ([`grid`]), planning and checks before it runs ([`plan`], with
//! the `--dry-run` time estimate in `estimate`), the results store ([`store`]), the worker
//! processes that train runs from the store ([`worker`]), the coordinator that queues the grid and
//! starts them ([`coordinator`]) with its progress display ([`progress`]), and read-only views of
//! a store ([`inspect`]).
pub mod coordinator;
mod estimate;
pub mod fault;
pub mod grid;
pub mod inspect;
pub mod plan;
pub mod progress;
pub mod store;
pub mod worker;
