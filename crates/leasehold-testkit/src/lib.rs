//! Test support for leasehold: real redis-server processes and a fault proxy.
