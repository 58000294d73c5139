//! Sluice's configuration side: the Azure IoT Operations dataflow resources (`DataflowEndpoint`,
//! `Dataflow`, `DataflowProfile`), their validation, and the control protocol spoken with the
//! data plane. Nothing is implemented here yet; see ARCHITECTURE.md ("Resources").
