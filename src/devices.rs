//! `roipd devices`: what audio, GPIO and radio-interface hardware this machine has.
