//! Sluice's configuration side: the Azure IoT Operations dataflow resources (`DataflowEndpoint`,
//! `Dataflow`, `DataflowProfile`), their validation, and the control protocol spoken with the
//! data plane. See ARCHITECTURE.md ("Resources", "Control protocol").

pub mod control;
