//! The network-namespace lab (being written).
