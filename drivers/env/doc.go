// Package env is the environment sensor layer: the [Reading] every sensor
// returns, the [Sensor] interface the agent consumes, the plausibility
// check that turns a broken chip's output into a fault, and the [Prober]
// that keeps a missing or failing sensor from ever stopping the agent.
//
// Readings carry their units in their field names: temperature in degrees
// Celsius, pressure in hectopascals (1 hPa = 100 Pa = 1 mbar; 1013.25 hPa is
// the standard atmosphere), relative humidity in percent.
//
// Drivers live in subpackages: bmx280 (Bosch BMP280/BME280 over I2C with
// periph.io), iio (the Linux kernel's driver through sysfs) and envsim (a
// simulated sensor for demos and the fleet simulator). None of them log or
// start goroutines; the agent drives them from its own ticker.
package env
