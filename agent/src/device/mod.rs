//! Devices the hypervisor adds to a running VM.
//!
//! - [`cpu_mem`]: hot-added CPUs and memory blocks brought online
//!   (OnlineCPUMem), and the containers' cpusets widened to match.

pub mod cpu_mem;
