//! Load testing for the failover gateway.
//!
//! [`region`] is a simulated regional app whose behaviour can be switched at run time; the
//! gateway's demo and the integration tests reuse it for fault injection.

pub mod region;
