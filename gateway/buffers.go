package gateway

// maxWrite is the largest FUSE WRITE the mount takes.
const maxWrite = 1 << 20
