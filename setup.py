"""pip install for the ROS-free core and the console scripts.

ROS users build the package with colcon/ament_cmake (CMakeLists.txt: messages + these sources);
plain Python users `pip install .` and get sfs_ros.core and the `sfs` command without ROS.
"""
from setuptools import find_packages, setup

setup(
    name="sfs_ros",
    version="0.1.0",
    description="Semantic-Fast-SAM: FastSAM masks named by CLIP, as a ROS 2 node and a Python core",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["sfs_ros", "sfs_ros.*"]),
    # ultralytics: the range sfs_ros.core.segmenter's private-hook override was checked against
    install_requires=["numpy", "opencv-python-headless", "torch", "torchvision",
                      "ultralytics>=8.4.75,<8.5", "open-clip-torch", "tqdm"],
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/sfs_ros"]),
        ("share/sfs_ros", ["package.xml"]),
    ],
    entry_points={
        "console_scripts": [
            "sfs = sfs_ros.cli:main",
            "sfs_eval = sfs_ros.eval.cli:main",
            "sfs_node = sfs_ros.ros.main:main",
        ],
    },
)
