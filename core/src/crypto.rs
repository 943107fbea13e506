//! The few cryptographic primitives of the SecretConnection, behind one small interface.
