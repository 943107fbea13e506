//! SecretConnection (spec 2), sans-IO: the handshake state machine and the frame sealer/opener.
