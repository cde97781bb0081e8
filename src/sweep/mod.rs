//! The experiment grid: its spec ([`grid`]), the results store ([`store`]), the worker processes
//! that train runs from the store ([`worker`]) and the coordinator that starts them and shows
//! progress ([`coordinator`]).
pub mod coordinator;
pub mod grid;
pub mod store;
pub mod worker;
