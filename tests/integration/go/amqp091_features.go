// Sluice's features through Go's client, github.com/rabbitmq/amqp091-go
// (Debian's golang-github-rabbitmq-amqp091-go-dev, built in GOPATH mode with
// no downloads; see ../test_go_amqp091.py, which builds and runs this against
// the broker it starts). The broker is SLUICE_AMQP_HOST (default 127.0.0.1)
// and SLUICE_AMQP_PORT. Each check prints "ok NAME" or "FAIL NAME: why"; any
// failure makes the exit status 1. Every wait has a deadline; nothing sleeps
// to synchronise.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

var url string

func unique(prefix string) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + ".go." + hex.EncodeToString(b)
}

func must(err error, what string) {
	if err != nil {
		panic(fmt.Errorf("%s: %w", what, err))
	}
}

func check(cond bool, format string, args ...interface{}) {
	if !cond {
		panic(fmt.Errorf(format, args...))
	}
}

// confirmChannel opens a connection and a channel in confirm mode whose
// confirms arrive on the returned Go channel (buffered for n publishes).
func confirmChannel(n int) (*amqp.Connection, *amqp.Channel, chan amqp.Confirmation) {
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	must(err, "dial")
	ch, err := conn.Channel()
	must(err, "channel")
	must(ch.Confirm(false), "confirm.select")
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, n+1))
	return conn, ch, confirms
}

// waitConfirms takes n confirms, each must be an ack, tags 1..n in order.
func waitConfirms(confirms chan amqp.Confirmation, n int, d time.Duration) {
	deadline := time.After(d)
	for i := 1; i <= n; i++ {
		select {
		case c, ok := <-confirms:
			check(ok, "confirm channel closed after %d of %d confirms", i-1, n)
			check(c.Ack, "publish %d nacked", c.DeliveryTag)
			check(c.DeliveryTag == uint64(i), "confirm tag %d, expected %d", c.DeliveryTag, i)
		case <-deadline:
			panic(fmt.Errorf("only %d of %d confirms in %v", i-1, n, d))
		}
	}
}

func recv(deliveries <-chan amqp.Delivery, d time.Duration, what string) amqp.Delivery {
	select {
	case m, ok := <-deliveries:
		check(ok, "%s: consumer closed", what)
		return m
	case <-time.After(d):
		panic(fmt.Errorf("%s: nothing delivered in %v", what, d))
	}
}

// Publish with confirms, consume with manual ack: the body, properties and
// headers round trip, the ack removes the message, an unacked delivery is
// redelivered after the channel closes.
func checkBasic() {
	conn, ch, confirms := confirmChannel(2)
	defer conn.Close()
	q, err := ch.QueueDeclare(unique("basic"), false, false, true, false, nil)
	must(err, "queue.declare")
	must(ch.Publish("", q.Name, false, false, amqp.Publishing{
		ContentType: "text/plain", DeliveryMode: amqp.Persistent, MessageId: "id-1",
		Headers: amqp.Table{"k": "v", "n": int32(7)}, Body: []byte("hello go"),
	}), "publish")
	must(ch.Publish("", q.Name, false, false, amqp.Publishing{Body: []byte("second")}), "publish")
	waitConfirms(confirms, 2, 5*time.Second)

	cch, err := conn.Channel()
	must(err, "channel")
	must(cch.Qos(1, 0, false), "basic.qos")
	ds, err := cch.Consume(q.Name, "", false, false, false, false, nil)
	must(err, "basic.consume")
	m := recv(ds, 5*time.Second, "first")
	check(string(m.Body) == "hello go", "body %q", m.Body)
	check(m.ContentType == "text/plain" && m.MessageId == "id-1" && m.DeliveryMode == 2,
		"properties %q %q %d", m.ContentType, m.MessageId, m.DeliveryMode)
	check(m.Headers["k"] == "v" && m.Headers["n"] == int32(7), "headers %v", m.Headers)
	check(!m.Redelivered, "first delivery marked redelivered")
	must(m.Ack(false), "basic.ack")
	m2 := recv(ds, 5*time.Second, "second")
	check(string(m2.Body) == "second", "second body %q", m2.Body)
	// Not acked: closing the channel requeues it.
	must(cch.Close(), "channel.close")

	cch2, err := conn.Channel()
	must(err, "channel")
	must(cch2.Qos(1, 0, false), "basic.qos")
	ds2, err := cch2.Consume(q.Name, "", false, false, false, false, nil)
	must(err, "basic.consume")
	m3 := recv(ds2, 5*time.Second, "redelivery")
	check(string(m3.Body) == "second" && m3.Redelivered, "redelivery %q redelivered=%v", m3.Body, m3.Redelivered)
	must(m3.Ack(false), "basic.ack")
	must(cch2.Close(), "channel.close")
	st, err := ch.QueueInspect(q.Name)
	must(err, "queue.declare passive")
	check(st.Messages == 0, "%d messages left after the acks", st.Messages)
}

// A durable stream: 20 confirmed publishes, a consumer from x-stream-offset
// int64 10 (prefetch 5) gets m10..m19, each delivery's x-stream-offset header
// its offset; reading removes nothing.
func checkStreams() {
	conn, ch, confirms := confirmChannel(20)
	defer conn.Close()
	q := unique("stream")
	_, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "stream"})
	must(err, "queue.declare stream")
	defer ch.QueueDelete(q, false, false, false)
	for i := 0; i < 20; i++ {
		must(ch.Publish("", q, false, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent, Body: []byte(fmt.Sprintf("m%d", i))}), "publish")
	}
	waitConfirms(confirms, 20, 10*time.Second)

	cch, err := conn.Channel()
	must(err, "channel")
	must(cch.Qos(5, 0, false), "basic.qos")
	ds, err := cch.Consume(q, "", false, false, false, false, amqp.Table{"x-stream-offset": int64(10)})
	must(err, "basic.consume at offset 10")
	for i := 10; i < 20; i++ {
		m := recv(ds, 10*time.Second, fmt.Sprintf("offset %d", i))
		check(string(m.Body) == fmt.Sprintf("m%d", i), "at offset %d body %q", i, m.Body)
		off, ok := m.Headers["x-stream-offset"].(int64)
		check(ok, "x-stream-offset header %#v is not an int64", m.Headers["x-stream-offset"])
		check(off == int64(i), "x-stream-offset %d for m%d", off, i)
		must(m.Ack(false), "basic.ack")
	}
	// Nothing past the end.
	select {
	case m := <-ds:
		panic(fmt.Errorf("extra delivery %q past the stream's end", m.Body))
	default:
	}
	must(cch.Close(), "channel.close")
	st, err := ch.QueueInspect(q)
	must(err, "queue.declare passive")
	check(st.Messages == 20, "stream has %d messages after reading, want 20", st.Messages)
}

// x-delayed-message with x-delayed-type direct: x-delay 600, 200, 400 ms come
// in due order (b, c, a), none before publish time + delay, none 2 s late,
// each with x-delay = -delay.
func checkDelayed() {
	conn, ch, confirms := confirmChannel(3)
	defer conn.Close()
	x := unique("delayed")
	must(ch.ExchangeDeclare(x, "x-delayed-message", true, false, false, false,
		amqp.Table{"x-delayed-type": "direct"}), "exchange.declare x-delayed-message")
	defer ch.ExchangeDelete(x, false, false)
	q, err := ch.QueueDeclare("", false, false, true, false, nil)
	must(err, "queue.declare")
	must(ch.QueueBind(q.Name, "jobs", x, false, nil), "queue.bind")
	ds, err := ch.Consume(q.Name, "", true, false, false, false, nil)
	must(err, "basic.consume")

	delays := map[string]int32{"a": 600, "b": 200, "c": 400}
	sent := map[string]time.Time{}
	for _, name := range []string{"a", "b", "c"} {
		sent[name] = time.Now()
		must(ch.Publish(x, "jobs", false, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent, Headers: amqp.Table{"x-delay": delays[name]},
			Body: []byte(name)}), "publish")
	}
	waitConfirms(confirms, 3, 5*time.Second)
	var order []string
	for len(order) < 3 {
		m := recv(ds, 5*time.Second, fmt.Sprintf("delayed message %d (after %v)", len(order)+1, order))
		at := time.Now()
		name := string(m.Body)
		d, ok := delays[name]
		check(ok, "unexpected body %q", name)
		due := sent[name].Add(time.Duration(d) * time.Millisecond)
		// The broker's clock has whole milliseconds: 1 ms of slack, as node/delayed.test.js.
		check(!at.Before(due.Add(-time.Millisecond)), "%s came %v early", name, due.Sub(at))
		check(at.Sub(due) < 2*time.Second, "%s came %v late", name, at.Sub(due))
		xd, _ := m.Headers["x-delay"]
		check(fmt.Sprint(xd) == fmt.Sprint(-d), "%s delivered with x-delay %#v, want %d", name, xd, -d)
		order = append(order, name)
	}
	check(fmt.Sprint(order) == "[b c a]", "delivery order %v, want [b c a]", order)
}

// A direct exchange with x-message-deduplication: true and x-cache-size:
// keys a, b, a, c (mandatory): the second a is dropped before routing and
// comes back as basic.return 312, every publish is acked, the queue has
// 0, 1, 3.
func checkDedup() {
	conn, ch, confirms := confirmChannel(4)
	defer conn.Close()
	returns := ch.NotifyReturn(make(chan amqp.Return, 4))
	x := unique("dedup")
	must(ch.ExchangeDeclare(x, "direct", false, true, false, false,
		amqp.Table{"x-message-deduplication": true, "x-cache-size": int32(100)}), "exchange.declare dedup")
	defer ch.ExchangeDelete(x, false, false)
	q, err := ch.QueueDeclare("", false, false, true, false, nil)
	must(err, "queue.declare")
	must(ch.QueueBind(q.Name, "rk", x, false, nil), "queue.bind")
	for i, key := range []string{"a", "b", "a", "c"} {
		must(ch.Publish(x, "rk", true, false, amqp.Publishing{
			Headers: amqp.Table{"x-deduplication-header": key}, Body: []byte(fmt.Sprint(i))}), "publish")
	}
	waitConfirms(confirms, 4, 5*time.Second)
	// A return comes before its publish's ack, so it is here by now.
	select {
	case r := <-returns:
		check(r.ReplyCode == 312 && string(r.Body) == "2", "return %d %q, want 312 \"2\"", r.ReplyCode, r.Body)
	default:
		panic(fmt.Errorf("the duplicate (mandatory) was not returned"))
	}
	select {
	case r := <-returns:
		panic(fmt.Errorf("a second return: %q", r.Body))
	default:
	}
	var got []string
	for {
		m, ok, err := ch.Get(q.Name, true)
		must(err, "basic.get")
		if !ok {
			break
		}
		got = append(got, string(m.Body))
	}
	check(fmt.Sprint(got) == "[0 1 3]", "queue holds %v, want [0 1 3]", got)
}

// x-consistent-hash with three queues bound with weights "1", "2", "3":
// 30,000 distinct routing keys, all confirmed, counts within 5% of n*w/6.
func checkConsistentHash() {
	const n = 30000
	conn, ch, confirms := confirmChannel(n)
	defer conn.Close()
	x := unique("chash")
	must(ch.ExchangeDeclare(x, "x-consistent-hash", false, true, false, false, nil), "exchange.declare x-consistent-hash")
	defer ch.ExchangeDelete(x, false, false)
	weights := []int{1, 2, 3}
	var queues []string
	for _, w := range weights {
		q, err := ch.QueueDeclare("", false, false, true, false, nil)
		must(err, "queue.declare")
		must(ch.QueueBind(q.Name, fmt.Sprint(w), x, false, nil), "queue.bind")
		queues = append(queues, q.Name)
	}
	for i := 0; i < n; i++ {
		must(ch.Publish(x, fmt.Sprintf("key-%d", i), false, false, amqp.Publishing{}), "publish")
	}
	waitConfirms(confirms, n, 30*time.Second)
	// Confirmed means enqueued: the depths are final.
	total := 0
	var counts []int
	for _, q := range queues {
		st, err := ch.QueueInspect(q)
		must(err, "queue.declare passive")
		counts = append(counts, st.Messages)
		total += st.Messages
	}
	check(total == n, "%d of %d routed (%v)", total, n, counts)
	for i, w := range weights {
		expected := float64(n*w) / 6
		dev := float64(counts[i])/expected - 1
		check(dev < 0.05 && dev > -0.05, "weight %d: %d vs %.0f (%v)", w, counts[i], expected, counts)
	}
	fmt.Printf("  consistent-hash counts %v for weights %v\n", counts, weights)
}

func run(name string, f func()) (ok bool) {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			fmt.Printf("FAIL %s: %v\n", name, r)
			ok = false
		}
	}()
	f()
	fmt.Printf("ok %s (%v)\n", name, time.Since(start).Round(time.Millisecond))
	return true
}

func main() {
	port := os.Getenv("SLUICE_AMQP_PORT")
	if port == "" {
		fmt.Println("FAIL: SLUICE_AMQP_PORT is not set")
		os.Exit(2)
	}
	host := os.Getenv("SLUICE_AMQP_HOST")
	if host == "" {
		host = "127.0.0.1"
	}
	url = fmt.Sprintf("amqp://guest:guest@%s:%s/%%2F", host, port)
	checks := []struct {
		name string
		f    func()
	}{
		{"basic_confirm_ack", checkBasic},
		{"stream_offset", checkStreams},
		{"delayed_due_order", checkDelayed},
		{"dedup_exchange", checkDedup},
		{"consistent_hash_weights", checkConsistentHash},
	}
	failed := 0
	for _, c := range checks {
		if !run(c.name, c.f) {
			failed++
		}
	}
	if failed > 0 {
		fmt.Printf("%d of %d checks failed\n", failed, len(checks))
		os.Exit(1)
	}
	fmt.Printf("all %d checks passed\n", len(checks))
}
