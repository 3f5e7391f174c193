//! Fault points of the control plane (see [`socle_agent_api::faults`]).

pub(crate) use socle_agent_api::faults::point;
