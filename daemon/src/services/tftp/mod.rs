//! TFTP server (being written).
