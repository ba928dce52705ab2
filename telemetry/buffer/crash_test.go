package buffer

const helperEnv = "BUFFER_TEST_HELPER"
