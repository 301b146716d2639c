// MiniHdfs runs a Hadoop MiniDFSCluster (one namenode, several datanodes)
// on 127.0.0.1 for Shoal's tests, and lets the test drive faults through
// commands on stdin. It is a single source file so that Java 17 runs it
// without a build step:
//
//   java -Xmx1g -cp '.cache/hdfs-jars/*' e2e/hdfs/MiniHdfs.java \
//       --base /tmp/minihdfs --port 0 --datanodes 3 --replication 2
//
// Protocol (stdout carries only these lines; Hadoop logs go to stderr):
//   NAMENODE=127.0.0.1:PORT   once the namenode listens (RPC)
//   NAMENODE_HTTP=127.0.0.1:PORT  its web server (/jmx for RPC counters)
//   READY                     once all datanodes have registered
// Commands, one per line on stdin, each answered by "OK <command>" or
// "ERR <command>: <reason>":
//   restart-datanode N   stop datanode N (0-based) and start it again on the
//                        same ports; MiniDFSCluster appends the restarted node
//                        to its list, so indexes of the others shift down
//   stop-namenode        stop the namenode (datanodes keep running)
//   start-namenode       start the namenode again on the same port
//   shutdown             stop everything and exit
// End of stdin means shutdown, so the cluster does not outlive a test
// process that died without stopping it.

import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.hdfs.protocol.HdfsConstants.SafeModeAction;

public class MiniHdfs {
    private final MiniDFSCluster cluster;
    private final PrintStream out;

    private MiniHdfs(MiniDFSCluster cluster, PrintStream out) {
        this.cluster = cluster;
        this.out = out;
    }

    public static void main(String[] args) throws Exception {
        // Keep stdout for the protocol: anything Hadoop prints goes to stderr.
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        System.setOut(System.err);
        // Hadoop at INFO writes thousands of lines per test run; warnings
        // are what explains a failure. Must be set before any logger exists.
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        }

        String base = null;
        int port = 0;
        int datanodes = 3;
        int replication = 2;
        long blockSize = 0;
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (i + 1 >= args.length) {
                usage("missing value for " + a);
            }
            String v = args[++i];
            switch (a) {
                case "--base": base = v; break;
                case "--port": port = Integer.parseInt(v); break;
                case "--datanodes": datanodes = Integer.parseInt(v); break;
                case "--replication": replication = Integer.parseInt(v); break;
                case "--block-size": blockSize = Long.parseLong(v); break;
                default: usage("unknown flag " + a);
            }
        }
        if (base == null) {
            usage("--base is required");
        }
        File baseDir = new File(base).getAbsoluteFile();

        Configuration conf = new Configuration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, baseDir.getPath());
        conf.set("hadoop.tmp.dir", new File(baseDir, "tmp").getPath());
        // Tests act as arbitrary users ("shoal", the login user): no permission checks.
        conf.setBoolean("dfs.permissions.enabled", false);
        conf.setInt("dfs.replication", replication);
        if (blockSize > 0) {
            conf.setLong("dfs.blocksize", blockSize);
        }
        // Nothing here speaks WebHDFS; skipping it saves startup time and a port.
        conf.setBoolean("dfs.webhdfs.enabled", false);
        // Everything is 127.0.0.1; reverse DNS of the datanodes' address is not
        // guaranteed to work in containers and is not needed.
        conf.setBoolean("dfs.namenode.datanode.registration.ip-hostname-check", false);
        conf.set("dfs.datanode.hostname", "127.0.0.1");
        // Short heartbeats so a restarted datanode or namenode is noticed in
        // seconds rather than the production defaults' tens of seconds.
        conf.setLong("dfs.heartbeat.interval", 1);
        conf.setInt("dfs.namenode.heartbeat.recheck-interval", 5000);
        conf.setInt("dfs.namenode.safemode.extension", 0);

        long t0 = System.nanoTime();
        MiniDFSCluster cluster = new MiniDFSCluster.Builder(conf, baseDir)
                .nameNodePort(port)
                .nameNodeHttpPort(0)
                .numDataNodes(datanodes)
                .format(true)
                .build();
        out.println("NAMENODE=127.0.0.1:" + cluster.getNameNodePort());
        out.println("NAMENODE_HTTP=127.0.0.1:" + cluster.getNameNode(0).getHttpAddress().getPort());
        cluster.waitActive();
        System.err.printf("MiniHdfs: cluster up in %.1fs%n", (System.nanoTime() - t0) / 1e9);
        out.println("READY");

        new MiniHdfs(cluster, out).serve();
    }

    private static void usage(String why) {
        System.err.println("MiniHdfs: " + why);
        System.err.println("usage: MiniHdfs --base DIR [--port N] [--datanodes N] [--replication N] [--block-size BYTES]");
        System.exit(2);
    }

    private void serve() throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            line = line.trim();
            if (line.isEmpty()) {
                continue;
            }
            if (line.equals("shutdown")) {
                break;
            }
            try {
                run(line.split("\\s+"));
                out.println("OK " + line);
            } catch (Exception e) {
                e.printStackTrace();
                out.println("ERR " + line + ": " + String.valueOf(e.getMessage()).replace('\n', ' '));
            }
        }
        cluster.shutdown(true);
        out.println("OK shutdown");
        System.exit(0);
    }

    private void run(String[] cmd) throws Exception {
        switch (cmd[0]) {
            case "restart-datanode": {
                int i = datanodeIndex(cmd);
                if (!cluster.restartDataNode(i, true)) {
                    throw new IllegalStateException("datanode " + i + " did not restart");
                }
                cluster.waitActive();
                break;
            }
            case "stop-namenode":
                cluster.shutdownNameNode(0);
                break;
            case "start-namenode":
                cluster.restartNameNode(0, true);
                waitOutOfSafeMode();
                break;
            default:
                throw new IllegalArgumentException("unknown command");
        }
    }

    private int datanodeIndex(String[] cmd) {
        if (cmd.length != 2) {
            throw new IllegalArgumentException("want: " + cmd[0] + " N");
        }
        return Integer.parseInt(cmd[1]);
    }

    // After a restart the namenode stays in safe mode until the datanodes have
    // reported enough blocks. Writes fail meanwhile, which would make "the
    // namenode is back" flaky for tests; datanodes report within a few
    // heartbeats, and if they have not after 30 s, leave safe mode by force.
    private void waitOutOfSafeMode() throws Exception {
        long deadline = System.nanoTime() + 30_000_000_000L;
        while (cluster.getNameNode(0).isInSafeMode()) {
            if (System.nanoTime() > deadline) {
                cluster.getNameNodeRpc(0).setSafeMode(SafeModeAction.SAFEMODE_LEAVE, false);
                return;
            }
            Thread.sleep(100);
        }
    }
}
