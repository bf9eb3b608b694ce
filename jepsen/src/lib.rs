//! raftmq-jepsen: Jepsen-style fault injection against the raftmq docker-compose cluster.
//! `history` records operations, `checker` judges them, `report` writes the summary and the HTML
//! timeline, `nemesis` injects faults through the docker CLI, `consume` is the consumer group's
//! workers and drain, `run` drives a whole test.
pub mod checker;
pub mod consume;
pub mod history;
pub mod nemesis;
pub mod report;
pub mod run;
