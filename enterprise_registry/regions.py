"""Code tables: Xiangyang's GB/T 2260 administrative divisions."""

from __future__ import annotations

# 高新区, 东津新区 and 鱼梁洲 are functional zones, not GB/T 2260 divisions: they register under
# the city code 420600.
XIANGYANG: dict[str, str] = {
    "420600": "襄阳市",
    "420602": "襄城区",
    "420606": "樊城区",
    "420607": "襄州区",
    "420624": "南漳县",
    "420625": "谷城县",
    "420626": "保康县",
    "420682": "老河口市",
    "420683": "枣阳市",
    "420684": "宜城市",
}
