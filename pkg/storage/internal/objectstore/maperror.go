package objectstore

// MapError turns an error of a call made beside the wrapped driver, with the
// store's own SDK (the drivers' conditional writes), into the contract's, as
// the errors of the driver's own calls are: typed errors bare, outages
// wrapping storage.ErrUnavailable and naming the store.
func (d *Driver) MapError(op, p string, err error) error { return d.mapErr(op, p, err) }
