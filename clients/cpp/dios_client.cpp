// dios_client: a small MessagePack-RPC client for the DIOS engine, in C++17 with msgpack-c.
//
// It speaks the public protocol over a plain TCP socket:
//   request       [0, msgid, method, [args]]
//   response      [1, msgid, error, result]    (error is nil on success, else
//                                               {code, description, solution, ...})
//   notification  [2, method, params]          (events arrive as [2, "event", [message]])
// Responses are matched to requests by msgid; notifications may arrive at any moment,
// before or between responses, and are handled as they come. Messages are read from a
// stream, so a message may span several reads and one read may hold several messages.
//
// What it does, in order: says hello (rpc.hello; a server without it is accepted), logs in,
// reads the generator's kV, subscribes to the generator's param events, sets kV and prints
// the value the generator accepted, waits for the KV param event, registers a study,
// exposes its first image, downloads that image's DICOM file (a bin payload) and writes it
// to the output path. Any error reply ends the program with a message and exit status 2.
//
// Build:  g++ -std=c++17 -O2 -Wall -Wextra -DMSGPACK_NO_BOOST -o dios_client dios_client.cpp
// Run:    DIOS_USER=tech1 DIOS_PASSWORD=... ./dios_client 127.0.0.1 18800 image.dcm --kv 81

#include <msgpack.hpp>

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr const char* kClientName = "dios-cpp-client/1.0";
constexpr const char* kProtocol = "1.0";        // the protocol version this client speaks
constexpr const char* kMethodNotFound = "0x030007";
constexpr const char* kGenerator = "DIOS/DEVICE/Generator";

// ---- requests: typed argument objects, packed as MessagePack maps -----------------------

struct Hello {
    std::string client = kClientName;
    std::string protocol = kProtocol;
    MSGPACK_DEFINE_MAP(client, protocol);
};

struct Login {
    std::string username;
    std::string password;
    MSGPACK_DEFINE_MAP(username, password);
};

struct DeviceCommand {
    std::string deviceUri = kGenerator;
    std::string reqName;
    std::string reqParam;
    std::string reqTransaction;
    std::string reqClientID = "cpp-client";
    MSGPACK_DEFINE_MAP(deviceUri, reqName, reqParam, reqTransaction, reqClientID);
};

struct Subscribe {
    std::string pattern;
    std::vector<std::string> kinds;
    MSGPACK_DEFINE_MAP(pattern, kinds);
};

struct ViewRef {
    std::string view_id;
    std::string procedure_id;
    MSGPACK_DEFINE_MAP(view_id, procedure_id);
};

struct StudyRegister {
    std::string accession_number = "CPP0000001";
    std::string patient_id = "CPP-PAT-001";
    std::string patient_name = "Cpp^Client";
    std::string patient_size = "Medium";
    std::string patient_age = "042Y";
    std::string patient_dob = "1983-04-01T00:00:00Z";
    std::string patient_sex = "F";
    std::string patient_type = "Human";
    std::string modality = "DX";
    std::string study_type = "Normal";
    std::string comment = "registered by the C++ MessagePack-RPC client";
    std::vector<ViewRef> views = {{"View_DX_T_A_SK_AP_00", "P0-0002"}};
    MSGPACK_DEFINE_MAP(accession_number, patient_id, patient_name, patient_size, patient_age,
                       patient_dob, patient_sex, patient_type, modality, study_type, comment,
                       views);
};

struct InstanceRef {
    std::string instance_uid;
    MSGPACK_DEFINE_MAP(instance_uid);
};

// ---- replies: only the fields this client reads; other fields are ignored ---------------

struct LoginReply {
    std::string token;
    std::string name;
    MSGPACK_DEFINE_MAP(token, name);
};

struct DeviceReply {
    std::string reqName;
    std::string code;
    std::string description;
    std::string result;
    MSGPACK_DEFINE_MAP(reqName, code, description, result);
};

struct SubscribeReply {
    int64_t subscription = 0;
    std::string pattern;
    MSGPACK_DEFINE_MAP(subscription, pattern);
};

struct Image {
    std::string sop_instance_id;
    std::string view_id;
    MSGPACK_DEFINE_MAP(sop_instance_id, view_id);
};

struct Series {
    std::vector<Image> images;
    MSGPACK_DEFINE_MAP(images);
};

struct Study {
    std::string study_id;
    std::vector<Series> series;
    MSGPACK_DEFINE_MAP(study_id, series);
};

struct AcquisitionContext {
    double kv = 0, ma = 0, ms = 0, mas = 0;
    MSGPACK_DEFINE_MAP(kv, ma, ms, mas);
};

struct ExposedImage {
    std::string sop_instance_id;
    std::string expose_status;
    std::string storage_status;
    AcquisitionContext acquisition_context;
    MSGPACK_DEFINE_MAP(sop_instance_id, expose_status, storage_status, acquisition_context);
};

struct Exposure {
    ExposedImage image;
    MSGPACK_DEFINE_MAP(image);
};

struct Event {
    std::string uri;
    std::string kind;
    std::string name;
    std::string value;
    int64_t seq = 0;
    int64_t sseq = 0;            // per-subscription sequence; 0 when the server sends none
    int64_t subscription = 0;
    MSGPACK_DEFINE_MAP(uri, kind, name, value, seq, sseq, subscription);
};

// ---- errors ------------------------------------------------------------------------------

// An error reply from the server: the method and the error object's fields.
struct RpcError : std::runtime_error {
    std::string method, code, description, solution;
    RpcError(std::string m, std::string c, std::string d, std::string s)
        : std::runtime_error(m + " failed: " + c + " " + d + (s.empty() ? "" : " (" + s + ")")),
          method(std::move(m)), code(std::move(c)), description(std::move(d)),
          solution(std::move(s)) {}
};

// The string value of key in a map object, or "" (for error objects, which may carry any
// extra members).
std::string map_string(const msgpack::object& map, const std::string& key) {
    if (map.type != msgpack::type::MAP) return "";
    for (uint32_t i = 0; i < map.via.map.size; ++i) {
        const auto& kv = map.via.map.ptr[i];
        if (kv.key.type == msgpack::type::STR && kv.key.as<std::string>() == key) {
            if (kv.val.type == msgpack::type::STR) return kv.val.as<std::string>();
            std::ostringstream out;
            out << kv.val;
            return out.str();
        }
    }
    return "";
}

const msgpack::object* map_get(const msgpack::object& map, const std::string& key) {
    if (map.type != msgpack::type::MAP) return nullptr;
    for (uint32_t i = 0; i < map.via.map.size; ++i) {
        const auto& kv = map.via.map.ptr[i];
        if (kv.key.type == msgpack::type::STR && kv.key.as<std::string>() == key)
            return &kv.val;
    }
    return nullptr;
}

// ---- the connection ----------------------------------------------------------------------

using Clock = std::chrono::steady_clock;

// One MessagePack-RPC connection: sends requests, reads the stream, matches responses by
// msgid and hands notifications to on_notification as they arrive.
class RpcConnection {
public:
    std::function<void(const std::string& method, const msgpack::object& params)> on_notification;

    RpcConnection(const std::string& host, const std::string& port) {
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* found = nullptr;
        int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
        if (rc != 0) throw std::runtime_error("cannot resolve " + host + ": " + gai_strerror(rc));
        std::string last = "no address";
        for (addrinfo* a = found; a != nullptr && fd_ < 0; a = a->ai_next) {
            int fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
            if (fd < 0) { last = std::strerror(errno); continue; }
            if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
                fd_ = fd;
            } else {
                last = std::strerror(errno);
                ::close(fd);
            }
        }
        freeaddrinfo(found);
        if (fd_ < 0) throw std::runtime_error("cannot connect to " + host + ":" + port + ": " + last);
        int one = 1;
        setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    ~RpcConnection() { if (fd_ >= 0) ::close(fd_); }
    RpcConnection(const RpcConnection&) = delete;
    RpcConnection& operator=(const RpcConnection&) = delete;

    // Call method with one argument object; return the response (its result is
    // response.get().via.array.ptr[3]). An error reply throws RpcError.
    template <class Args>
    msgpack::object_handle call(const std::string& method, const Args& args, double timeout_s) {
        const uint32_t msgid = next_id_++;
        msgpack::sbuffer buf;
        msgpack::packer<msgpack::sbuffer> pk(buf);
        pk.pack_array(4);
        pk.pack(0);
        pk.pack(msgid);
        pk.pack(method);
        pk.pack_array(1);   // params = [args]
        pk.pack(args);
        send_all(buf.data(), buf.size());

        const auto deadline = Clock::now() + to_duration(timeout_s);
        for (;;) {
            msgpack::object_handle msg = read_message(deadline, method);
            const msgpack::object& o = msg.get();
            if (o.via.array.ptr[0].as<int>() != 1) {
                dispatch_notification(o);
                continue;
            }
            if (o.via.array.size != 4) throw std::runtime_error("malformed response to " + method);
            if (o.via.array.ptr[1].as<uint32_t>() != msgid) {
                // a response to a call this client no longer waits for: not expected here
                std::cerr << "note: response to unknown msgid "
                          << o.via.array.ptr[1] << " ignored\n";
                continue;
            }
            const msgpack::object& err = o.via.array.ptr[2];
            if (!err.is_nil()) {
                if (err.type == msgpack::type::MAP)
                    throw RpcError(method, map_string(err, "code"), map_string(err, "description"),
                                   map_string(err, "solution"));
                std::ostringstream text;
                text << err;
                throw RpcError(method, "?", text.str(), "");
            }
            return msg;
        }
    }

    // Read and dispatch messages until done() holds or the deadline passes.
    void pump_until(const std::function<bool()>& done, double timeout_s, const std::string& what) {
        const auto deadline = Clock::now() + to_duration(timeout_s);
        while (!done()) {
            msgpack::object_handle msg = read_message(deadline, what);
            const msgpack::object& o = msg.get();
            if (o.via.array.ptr[0].as<int>() == 1)
                std::cerr << "note: unexpected response to msgid " << o.via.array.ptr[1] << "\n";
            else
                dispatch_notification(o);
        }
    }

private:
    int fd_ = -1;
    uint32_t next_id_ = 1;
    msgpack::unpacker unpacker_;

    static Clock::duration to_duration(double s) {
        return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
    }

    void send_all(const char* data, size_t size) {
        while (size > 0) {
            ssize_t n = ::send(fd_, data, size, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR) continue;
                throw std::runtime_error(std::string("send failed: ") + std::strerror(errno));
            }
            data += n;
            size -= static_cast<size_t>(n);
        }
    }

    // The next complete message from the stream, reading more bytes as needed. Each
    // message owns its memory (object_handle), so it outlives later reads.
    msgpack::object_handle read_message(Clock::time_point deadline, const std::string& what) {
        msgpack::object_handle msg;
        while (!unpacker_.next(msg)) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            if (left.count() <= 0)
                throw std::runtime_error("timed out waiting for " + what);
            pollfd p{fd_, POLLIN, 0};
            int rc = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 60000)));
            if (rc < 0 && errno != EINTR)
                throw std::runtime_error(std::string("poll failed: ") + std::strerror(errno));
            if (rc <= 0) continue;
            constexpr size_t kChunk = 1 << 16;
            unpacker_.reserve_buffer(kChunk);
            ssize_t n = ::recv(fd_, unpacker_.buffer(), kChunk, 0);
            if (n < 0) {
                if (errno == EINTR || errno == EAGAIN) continue;
                throw std::runtime_error(std::string("receive failed: ") + std::strerror(errno));
            }
            if (n == 0) throw std::runtime_error("server closed the connection while waiting for " + what);
            unpacker_.buffer_consumed(static_cast<size_t>(n));
        }
        const msgpack::object& o = msg.get();
        if (o.type != msgpack::type::ARRAY || o.via.array.size < 3 ||
            o.via.array.ptr[0].type != msgpack::type::POSITIVE_INTEGER)
            throw std::runtime_error("server sent a message that is not MessagePack-RPC");
        return msg;
    }

    void dispatch_notification(const msgpack::object& o) {
        if (o.via.array.ptr[0].as<int>() != 2 || o.via.array.ptr[1].type != msgpack::type::STR)
            throw std::runtime_error("server sent a message that is not MessagePack-RPC");
        if (on_notification) on_notification(o.via.array.ptr[1].as<std::string>(), o.via.array.ptr[2]);
    }
};

// The result member of a response, converted to T.
template <class T>
T result_as(const msgpack::object_handle& response, const std::string& method) {
    try {
        return response.get().via.array.ptr[3].as<T>();
    } catch (const msgpack::type_error&) {
        throw std::runtime_error("the reply of " + method + " does not have the expected fields");
    }
}

// ---- the program ---------------------------------------------------------------------------

struct Options {
    std::string host, port, output;
    std::string user, password;
    std::string kv = "81";
    double timeout = 600.0;   // seconds per reply; an exposure on a busy console takes long
};

[[noreturn]] void usage(const std::string& problem) {
    std::cerr << "error: " << problem << "\n"
              << "usage: dios_client HOST PORT OUTPUT.dcm [--user NAME] [--password PW]"
                 " [--kv VALUE] [--timeout SECONDS]\n"
                 "       (user and password default to $DIOS_USER and $DIOS_PASSWORD)\n";
    std::exit(64);
}

Options parse(int argc, char** argv) {
    Options opt;
    if (const char* u = std::getenv("DIOS_USER")) opt.user = u;
    if (const char* p = std::getenv("DIOS_PASSWORD")) opt.password = p;
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage(a + " needs a value");
            return argv[++i];
        };
        if (a == "--user") opt.user = value();
        else if (a == "--password") opt.password = value();
        else if (a == "--kv") opt.kv = value();
        else if (a == "--timeout") {
            try { opt.timeout = std::stod(value()); } catch (const std::exception&) { usage("--timeout needs a number"); }
        } else if (a.rfind("--", 0) == 0) usage("unknown option " + a);
        else positional.push_back(a);
    }
    if (positional.size() != 3) usage("HOST, PORT and OUTPUT.dcm are required");
    opt.host = positional[0];
    opt.port = positional[1];
    opt.output = positional[2];
    if (opt.user.empty() || opt.password.empty())
        usage("user and password are required (--user/--password or DIOS_USER/DIOS_PASSWORD)");
    return opt;
}

int run(const Options& opt) {
    RpcConnection rpc(opt.host, opt.port);
    std::cout << "connected " << opt.host << ":" << opt.port << std::endl;

    int kv_events = 0;
    rpc.on_notification = [&](const std::string& method, const msgpack::object& params) {
        const bool one = params.type == msgpack::type::ARRAY && params.via.array.size >= 1;
        if (method == "event" && one) {
            Event ev;
            try {
                ev = params.via.array.ptr[0].as<Event>();
            } catch (const msgpack::type_error&) {
                std::cout << "event: (unreadable) " << params << std::endl;
                return;
            }
            if (ev.kind != "param") return;
            if (ev.name == "KV") ++kv_events;
            std::cout << "event: " << ev.uri << " " << ev.kind << " " << ev.name << "="
                      << ev.value << " seq=" << ev.seq << " sseq=" << ev.sseq << std::endl;
        } else if (method == "events.dropped" && one) {
            std::cout << "events dropped: " << params.via.array.ptr[0] << std::endl;
        } else {
            // server notices: session.expired, session.revoked, error ...
            std::cout << "notice: " << method << " " << params << std::endl;
        }
    };

    // Handshake: a server without rpc.hello (METHOD_NOT_FOUND) is accepted.
    try {
        auto hello = rpc.call("rpc.hello", Hello{}, opt.timeout);
        const msgpack::object& r = hello.get().via.array.ptr[3];
        std::cout << "hello: server " << map_string(r, "server") << " " << map_string(r, "version")
                  << " protocol " << map_string(r, "protocol") << " compatible "
                  << map_string(r, "compatible") << std::endl;
        const msgpack::object* ok = map_get(r, "compatible");
        if (ok != nullptr && ok->type == msgpack::type::BOOLEAN && !ok->via.boolean)
            throw std::runtime_error("the server does not speak protocol " + std::string(kProtocol) +
                                     ": " + map_string(r, "reason"));
    } catch (const RpcError& e) {
        if (e.code != kMethodNotFound) throw;
        std::cout << "hello: not available on this server (" << e.code << " " << e.description
                  << "); continuing" << std::endl;
    }

    auto login = result_as<LoginReply>(rpc.call("auth.login", Login{opt.user, opt.password}, opt.timeout),
                                       "auth.login");
    if (login.token.empty()) throw std::runtime_error("auth.login replied without a token");
    std::cout << "login: " << login.name << std::endl;

    DeviceCommand get_kv;
    get_kv.reqName = "GetParam_KV";
    get_kv.reqTransaction = "cpp-get-kv";
    auto before = result_as<DeviceReply>(rpc.call("task.device_command", get_kv, opt.timeout),
                                         "task.device_command");
    std::cout << "kv.read: " << before.result << std::endl;

    auto sub = result_as<SubscribeReply>(
        rpc.call("events.subscribe", Subscribe{kGenerator, {"param"}}, opt.timeout),
        "events.subscribe");
    std::cout << "subscribed: " << sub.pattern << " subscription " << sub.subscription << std::endl;

    DeviceCommand set_kv;
    set_kv.reqName = "SetParam_KV";
    set_kv.reqParam = opt.kv;
    set_kv.reqTransaction = "cpp-set-kv";
    auto set = result_as<DeviceReply>(rpc.call("task.device_command", set_kv, opt.timeout),
                                      "task.device_command");
    std::cout << "kv.set: requested " << opt.kv << " accepted " << set.result << " ("
              << set.code << " " << set.description << ")" << std::endl;
    // The KV event may come before or after the reply; a set to the value already held
    // changes nothing and publishes no event.
    if (set.result != before.result)
        rpc.pump_until([&] { return kv_events > 0; }, opt.timeout, "the KV param event");

    Study study = result_as<Study>(rpc.call("study.register", StudyRegister{}, opt.timeout),
                                   "study.register");
    if (study.series.empty() || study.series[0].images.empty())
        throw std::runtime_error("study.register replied a study without images");
    const std::string uid = study.series[0].images[0].sop_instance_id;
    std::cout << "study: " << study.study_id << " image " << uid << " view "
              << study.series[0].images[0].view_id << std::endl;

    auto exposure = result_as<Exposure>(rpc.call("task.expose", InstanceRef{uid}, opt.timeout),
                                        "task.expose");
    const auto& ac = exposure.image.acquisition_context;
    std::cout << "expose: " << exposure.image.sop_instance_id << " " << exposure.image.expose_status
              << " " << exposure.image.storage_status << " kv " << ac.kv << " ma " << ac.ma
              << " ms " << ac.ms << " mas " << ac.mas << std::endl;

    auto file = rpc.call("task.image_file", InstanceRef{uid}, opt.timeout);
    const msgpack::object& reply = file.get().via.array.ptr[3];
    const msgpack::object* content = map_get(reply, "content");
    if (content == nullptr || content->type != msgpack::type::BIN)
        throw std::runtime_error("task.image_file replied no bin content");
    std::ofstream out(opt.output, std::ios::binary | std::ios::trunc);
    out.write(content->via.bin.ptr, content->via.bin.size);
    out.close();
    if (!out) throw std::runtime_error("cannot write " + opt.output);
    std::cout << "file: " << opt.output << " " << content->via.bin.size << " bytes "
              << map_string(reply, "media_type") << " " << map_string(reply, "filename") << std::endl;
    std::cout << "done" << std::endl;
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const Options opt = parse(argc, argv);
    try {
        return run(opt);
    } catch (const RpcError& e) {
        std::cerr << "error: " << e.what() << std::endl;
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << std::endl;
        return 1;
    }
}
