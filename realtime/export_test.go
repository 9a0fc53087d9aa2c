package realtime

import "github.com/jackc/pgx/v5/pgxpool"

// ReaderPool is the reader's own pool (one connection, see Node.Start): a
// test holds its connection to stall the reader.
func (n *Node) ReaderPool() *pgxpool.Pool { return n.reader.Pool }
