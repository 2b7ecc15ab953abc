// Command probe is the only program of the e2e test image: a tiny HTTP server and the
// network checks the tests run inside pods with `kubectl exec`.
//
//	probe serve            answer every HTTP request with "hello from <hostname>"
//	probe echo WORDS...    print the words (kubectl exec works)
//	probe get URL          print the body of an HTTP GET (Services, DNS)
//	probe resolve NAME     print the addresses of NAME (cluster DNS)
//	probe dial HOST:PORT   open a TCP connection, report success or the error
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

const timeout = 3 * time.Second

func main() {
	if len(os.Args) < 2 {
		fail("usage: probe serve|echo|get|resolve|dial ...")
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "serve":
		serve()
	case "echo":
		fmt.Println(strings.Join(args, " "))
	case "get":
		need(args, 1)
		get(args[0])
	case "resolve":
		need(args, 1)
		resolve(args[0])
	case "dial":
		need(args, 1)
		dial(args[0])
	default:
		fail("unknown command " + os.Args[1])
	}
}

func need(args []string, n int) {
	if len(args) < n {
		fail(fmt.Sprintf("need %d argument(s)", n))
	}
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, message)
	os.Exit(1)
}

func serve() {
	host, _ := os.Hostname()
	fmt.Printf("probe serving on :8080 as %s\n", host)
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", host)
	})
	if err := http.ListenAndServe(":8080", nil); err != nil {
		fail(err.Error())
	}
}

func get(url string) {
	client := http.Client{Timeout: timeout}
	response, err := client.Get(url)
	if err != nil {
		fail(err.Error())
	}
	defer response.Body.Close()
	body, _ := io.ReadAll(response.Body)
	fmt.Print(string(body))
}

func resolve(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	started := time.Now()
	addresses, err := net.DefaultResolver.LookupHost(ctx, name)
	if err != nil {
		fail(fmt.Sprintf("lookup failed after %s: %v", time.Since(started).Round(time.Millisecond), err))
	}
	fmt.Println(strings.Join(addresses, " "))
}

func dial(address string) {
	conn, err := net.DialTimeout("tcp", address, timeout)
	if err != nil {
		fail(err.Error())
	}
	conn.Close()
	fmt.Println("connected")
}
