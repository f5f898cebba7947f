"""The result-code table: every reply the engine sends carries one of these.

Codes live in the reference console's ``0x......`` space: a 24-bit number written as
``0x`` and six upper-case hex digits. The high byte is the domain:

====== ===========================================================
0x00   success
0x01   device bus (URI, command, parameter, state, timing, faults)
0x02   authentication and authorisation
0x03   request validation in the services (JSON, fields, ids)
0x04   studies, series and images
0x05   protocol catalog
0x06   files, storage and DICOM
0x07   image processing
0x0F   internal
====== ===========================================================

A code is defined once here with its English and Chinese description and solution text;
services raise :class:`DiosError` with a code and optional detail, and the shim turns it
into the reply envelope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class ResultCode:
    """One entry of the code table."""

    value: int
    name: str
    description: str
    solution: str
    description_zh: str
    solution_zh: str

    _registry: ClassVar[dict[int, ResultCode]] = {}

    @property
    def hex(self) -> str:
        """The code as the wire shows it, e.g. ``0x010005``."""
        return f"0x{self.value:06X}"

    def text(self, language: str = "en") -> tuple[str, str]:
        """(description, solution) in ``language`` (``en`` or ``zh``)."""
        if language == "zh":
            return self.description_zh, self.solution_zh
        return self.description, self.solution

    @classmethod
    def from_hex(cls, text: str) -> ResultCode:
        return cls._registry[int(text, 16)]


def _code(value: int, name: str, desc: str, sol: str, desc_zh: str, sol_zh: str) -> ResultCode:
    if value in ResultCode._registry:
        raise RuntimeError(f"duplicate result code 0x{value:06X}")
    code = ResultCode(value, name, desc, sol, desc_zh, sol_zh)
    ResultCode._registry[value] = code
    return code


SUCCESS = _code(0x000000, "SUCCESS", "Success", "", "成功", "")

# --- device bus --------------------------------------------------------------------------
BAD_URI = _code(0x010001, "BAD_URI", "Malformed device URI",
                "Use a URI of the form DIOS/DEVICE/<Name>, e.g. DIOS/DEVICE/Generator",
                "设备URI格式错误", "请使用 DIOS/DEVICE/<名称> 格式的URI")
UNKNOWN_DEVICE = _code(0x010002, "UNKNOWN_DEVICE", "Unknown device",
                       "Check the deviceUri against the devices registered on the bus",
                       "未知设备", "请检查设备URI是否已在总线上注册")
UNKNOWN_COMMAND = _code(0x010003, "UNKNOWN_COMMAND", "Unknown command for this device",
                        "Check reqName against the device's command list",
                        "该设备不支持此命令", "请检查命令名称")
BAD_PARAMETER = _code(0x010004, "BAD_PARAMETER", "Bad parameter",
                      "reqParam must be a value of the type the command expects",
                      "参数错误", "请检查参数类型与格式")
OUT_OF_RANGE = _code(0x010005, "OUT_OF_RANGE", "Parameter out of range",
                     "Choose a value within the device's limits",
                     "参数超出范围", "请在设备允许范围内取值")
WRONG_STATE = _code(0x010006, "WRONG_STATE", "Command not allowed in the current device state",
                    "Wait for the device to reach a state that accepts this command",
                    "当前设备状态不允许此操作", "请等待设备进入可执行状态")
BUSY = _code(0x010007, "BUSY", "Device busy", "Retry when the running task has finished",
             "设备忙", "请等待当前任务结束后重试")
TIMEOUT = _code(0x010008, "TIMEOUT", "Request timed out",
                "Check the device connection; the request may be retried",
                "请求超时", "请检查设备连接后重试")
DEVICE_FAULT = _code(0x010009, "DEVICE_FAULT", "Device fault",
                     "Clear the cause and send ResetError",
                     "设备故障", "排除故障后发送 ResetError")
COMM_LOST = _code(0x01000A, "COMM_LOST", "Communication with the device lost",
                  "Check cables and power, then reconnect or reset",
                  "设备通讯中断", "请检查线缆与电源后重新连接")
INTERLOCK_OPEN = _code(0x01000B, "INTERLOCK_OPEN", "Interlock open (door or safety circuit)",
                       "Close the door / safety circuit, then send ResetError",
                       "安全联锁断开(门未关闭)", "关闭门或安全回路后发送 ResetError")
TUBE_OVERHEAT = _code(0x01000C, "TUBE_OVERHEAT", "Tube heat limit reached",
                      "Wait for the anode to cool; the heat level is in the generator status",
                      "球管过热", "请等待阳极冷却")
DETECTOR_DISCONNECTED = _code(0x01000D, "DETECTOR_DISCONNECTED", "Detector disconnected",
                              "Reconnect the detector (Connect) and retake the image",
                              "探测器已断开", "请重新连接探测器后重拍")
FRAME_LOST = _code(0x01000E, "FRAME_LOST", "Image frame lost during transfer",
                   "Send ResetError; the exposure must be retaken",
                   "图像帧丢失", "请复位后重新曝光")
ABORTED = _code(0x01000F, "ABORTED", "Operation aborted",
                "The task was stopped by Abort or a fault", "操作已中止", "任务已被中止")
NOT_CALIBRATED = _code(0x010010, "NOT_CALIBRATED", "Calibration missing for this mode",
                       "Run offset and gain calibration for the selected mode",
                       "当前模式缺少校正数据", "请执行暗场与增益校正")
BUS_STOPPED = _code(0x010011, "BUS_STOPPED", "The device bus is stopped",
                    "Start the engine before sending commands", "设备总线已停止", "请先启动引擎")

# --- authentication and authorisation -----------------------------------------------------
NOT_AUTHENTICATED = _code(0x020001, "NOT_AUTHENTICATED", "Not logged in",
                          "Log in and send the token as 'Authorization: Bearer <token>'",
                          "未登录", "请登录后在请求头携带令牌")
BAD_CREDENTIALS = _code(0x020002, "BAD_CREDENTIALS", "Wrong user name or password",
                        "Check the user name and password", "用户名或密码错误", "请检查用户名和密码")
TOKEN_EXPIRED = _code(0x020003, "TOKEN_EXPIRED", "Token expired", "Log in again",
                      "令牌已过期", "请重新登录")
TOKEN_INVALID = _code(0x020004, "TOKEN_INVALID", "Token invalid", "Log in again",
                      "令牌无效", "请重新登录")
FORBIDDEN = _code(0x020005, "FORBIDDEN", "Your role may not do this",
                  "Ask a user with the required role", "当前角色无此权限", "请联系有权限的用户")
PASSWORD_MISMATCH = _code(0x020006, "PASSWORD_MISMATCH", "New password and confirmation differ",
                          "Type the same new password twice", "两次输入的新密码不一致",
                          "请两次输入相同的新密码")
PASSWORD_WEAK = _code(0x020007, "PASSWORD_WEAK", "Password too weak",
                      "Use at least 8 characters with letters and digits",
                      "密码强度不足", "请使用至少8位且包含字母和数字的密码")
PASSWORD_CHANGE_REQUIRED = _code(0x020008, "PASSWORD_CHANGE_REQUIRED",
                                 "The default password must be changed first",
                                 "Change the password, then log in again",
                                 "必须先修改默认密码", "请修改密码后重新登录")
USER_EXISTS = _code(0x020009, "USER_EXISTS", "User already exists", "Choose another user name",
                    "用户已存在", "请使用其他用户名")
TOO_MANY_ATTEMPTS = _code(0x02000A, "TOO_MANY_ATTEMPTS", "Too many failed logins",
                          "Wait the number of seconds in the description, then try again",
                          "登录失败次数过多", "请等待描述中的秒数后再试")

# --- request validation in the services ----------------------------------------------------
MALFORMED_REQUEST = _code(0x030001, "MALFORMED_REQUEST", "Malformed request body",
                          "Send a valid JSON object", "请求体格式错误", "请发送合法的JSON对象")
MISSING_FIELD = _code(0x030002, "MISSING_FIELD", "Mandatory field missing",
                      "Add the field named in the description", "缺少必填字段", "请补充描述中的字段")
INVALID_FIELD = _code(0x030003, "INVALID_FIELD", "Field has a wrong type or value",
                      "Correct the field named in the description", "字段类型或取值错误",
                      "请更正描述中的字段")
NOT_FOUND = _code(0x030004, "NOT_FOUND", "No such resource", "Check the id",
                  "资源不存在", "请检查ID")
PAYLOAD_TOO_LARGE = _code(0x030005, "PAYLOAD_TOO_LARGE", "Request too large",
                          "Send a smaller body or file", "请求过大", "请减小请求或文件大小")
UNSUPPORTED_MEDIA = _code(0x030006, "UNSUPPORTED_MEDIA", "Unsupported file or media type",
                          "Send the type the endpoint expects (e.g. PNG)", "不支持的文件或媒体类型",
                          "请发送接口要求的类型")
METHOD_NOT_FOUND = _code(0x030007, "METHOD_NOT_FOUND", "No such method or path",
                         "Check the API document (OpenAPI) for the method list",
                         "接口不存在", "请查阅接口文档")
LIMIT_REACHED = _code(0x030008, "LIMIT_REACHED", "Too many connections, subscriptions or requests",
                      "Close unused connections or subscriptions, or retry later",
                      "连接、订阅或请求过多", "请关闭不用的连接或订阅,或稍后再试")

# --- studies, series, images ----------------------------------------------------------------
STUDY_NOT_FOUND = _code(0x040001, "STUDY_NOT_FOUND", "Study not found", "Check the study id",
                        "检查不存在", "请检查检查号")
IMAGE_NOT_FOUND = _code(0x040002, "IMAGE_NOT_FOUND", "Image not found",
                        "Check the SOP instance UID", "图像不存在", "请检查图像UID")
INVALID_TRANSITION = _code(0x040003, "INVALID_TRANSITION", "Status change not allowed",
                           "Check the current status of the study or image",
                           "状态变更不允许", "请检查检查或图像的当前状态")
STUDY_LOCKED = _code(0x040004, "STUDY_LOCKED", "Study is locked", "Unlock the study first",
                     "检查已锁定", "请先解锁检查")
CONFLICT = _code(0x040005, "CONFLICT", "Changed by someone else meanwhile",
                 "Reload and apply the change again", "数据已被他人修改", "请刷新后重试")
DUPLICATE = _code(0x040006, "DUPLICATE", "Already exists", "Use another id",
                  "记录已存在", "请使用其他ID")

# --- protocol catalog -----------------------------------------------------------------------
CATALOG_NOT_FOUND = _code(0x050001, "CATALOG_NOT_FOUND", "Catalog entry not found",
                          "Check the id against the catalog", "协议条目不存在", "请检查协议ID")
CATALOG_READONLY = _code(0x050002, "CATALOG_READONLY", "Pre-installed entry cannot be changed this way",
                         "Disable it or create a custom entry", "预置条目不可修改",
                         "可禁用或新建自定义条目")
NO_TECHNIQUE = _code(0x050003, "NO_TECHNIQUE", "No exposure technique for this view and patient size",
                     "Add an APR entry for the view", "该体位无曝光参数", "请为该体位添加APR参数")

# --- files, storage, DICOM ------------------------------------------------------------------
STORAGE_ERROR = _code(0x060001, "STORAGE_ERROR", "Storage error",
                      "Check disk space and permissions of the data directory",
                      "存储错误", "请检查磁盘空间与数据目录权限")
BAD_FILE_NAME = _code(0x060002, "BAD_FILE_NAME", "File name not allowed",
                      "Use a plain file name without path separators", "文件名不合法",
                      "请使用不含路径分隔符的文件名")
DICOM_ERROR = _code(0x060003, "DICOM_ERROR", "DICOM encoding or network error",
                    "See the description for the failing attribute or peer", "DICOM错误",
                    "请查看描述中的属性或对端")
PEER_UNREACHABLE = _code(0x060004, "PEER_UNREACHABLE", "Remote peer unreachable",
                         "Check the peer's address, port and AE title", "远端不可达",
                         "请检查对端地址、端口和AE标题")

# --- image processing -----------------------------------------------------------------------
BAD_FRAME = _code(0x070001, "BAD_FRAME", "Frame cannot be processed",
                  "Check the frame's dtype, shape and values", "图像帧无法处理",
                  "请检查图像数据类型、尺寸与数值")
UNKNOWN_PROFILE = _code(0x070002, "UNKNOWN_PROFILE", "Unknown processing profile",
                        "Use one of the profiles listed in the description", "未知的图像处理参数",
                        "请使用描述中列出的参数名")

# --- internal -----------------------------------------------------------------------------
INTERNAL = _code(0x0F0001, "INTERNAL", "Internal error",
                 "The error was logged; report it with the log excerpt",
                 "内部错误", "错误已记录,请附日志联系技术支持")


class DiosError(Exception):
    """An error with a result code; carries optional detail for the description."""

    def __init__(self, code: ResultCode, detail: str = "", **data: object) -> None:
        self.code = code
        self.detail = detail
        self.data = data
        super().__init__(f"{code.hex} {code.name}: {code.description}" + (f": {detail}" if detail else ""))

    def description(self, language: str = "en") -> str:
        desc, _ = self.code.text(language)
        return f"{desc}: {self.detail}" if self.detail else desc

    def solution(self, language: str = "en") -> str:
        return self.code.text(language)[1]


def all_codes() -> list[ResultCode]:
    """Every code defined, in numeric order."""
    return [ResultCode._registry[k] for k in sorted(ResultCode._registry)]
